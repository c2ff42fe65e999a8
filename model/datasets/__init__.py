"""One module per data set, each read once for both uses: the test benchmarks of
:mod:`clip_ingest.model.benchmarks` and the training manifests of ``clip-model manifest``.

==============  =========================================================================
module          layout under the data root (``--data-root`` or ``$CLIP_INGEST_DATA``)
==============  =========================================================================
``eth80``       ``eth80/<category>/<category><n>/*.jpg``
``caltech``     ``caltech101/<class>/*.jpg`` with the splits ``train.txt`` / ``test.txt``
``flickr``      ``<folder>/captions.csv`` (``image,caption``) and ``<folder>/images/``
``cifar10``     ``cifar10/test/<class>/*.jpg``
==============  =========================================================================

:mod:`.common` holds what they share: the data root, the missing-data error and the even
subsampling of quick runs.
"""
