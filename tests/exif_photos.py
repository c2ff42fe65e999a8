"""Generated photos with the EXIF a camera or phone writes (Pillow writes EXIF, sub-IFDs included)."""

from __future__ import annotations

from typing import Any

from PIL import Image, TiffImagePlugin

from imagegen import image_bytes

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112
DATE_ORIGINAL, DATE_DIGITIZED, OFFSET_ORIGINAL, SUBSEC_ORIGINAL, LENS_MODEL = 0x9003, 0x9004, 0x9011, 0x9291, 0xA434
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_TIME, GPS_STATUS, GPS_DATE = 1, 2, 3, 4, 7, 9, 29


def rational(value: float, denominator: int = 10_000) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(round(value * denominator), denominator)


def dms(degrees: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    """Unsigned decimal degrees as EXIF's degrees, minutes, seconds rationals."""
    ten_thousandths = round(abs(degrees) * 3600 * 10_000)  # of a second of arc
    whole, rest = divmod(ten_thousandths, 3600 * 10_000)
    minutes, seconds = divmod(rest, 60 * 10_000)
    return rational(whole, 1), rational(minutes, 1), TiffImagePlugin.IFDRational(seconds, 10_000)


def make_exif(
    *,
    make: Any = None,
    model: Any = None,
    lens: Any = None,
    taken: Any = None,
    offset: Any = None,
    subsec: Any = None,
    digitized: Any = None,
    lat: float | None = None,
    lon: float | None = None,
    gps: dict[int, Any] | None = None,
    orientation: Any = None,
) -> Image.Exif:
    """An EXIF block: ``taken`` is EXIF text (``"2019:06:01 14:30:00"``); ``lat``/``lon`` signed
    degrees; ``gps`` raw GPS tags written as given (hostile values included)."""
    exif = Image.Exif()
    for tag, value in ((MAKE, make), (MODEL, model), (ORIENTATION, orientation)):
        if value is not None:
            exif[tag] = value
    sub = {DATE_ORIGINAL: taken, OFFSET_ORIGINAL: offset, SUBSEC_ORIGINAL: subsec, DATE_DIGITIZED: digitized, LENS_MODEL: lens}
    if any(v is not None for v in sub.values()):
        ifd = exif.get_ifd(EXIF_IFD)
        ifd.update({tag: value for tag, value in sub.items() if value is not None})
    tags = dict(gps or {})
    if lat is not None:
        tags.update({GPS_LAT_REF: "N" if lat >= 0 else "S", GPS_LAT: dms(lat)})
    if lon is not None:
        tags.update({GPS_LON_REF: "E" if lon >= 0 else "W", GPS_LON: dms(lon)})
    if tags:
        exif.get_ifd(GPS_IFD).update(tags)
    return exif


def photo_bytes(exif: Image.Exif | bytes | None = None, *, colour=(90, 140, 200), size=(96, 64), fmt: str = "JPEG") -> bytes:
    """An image file's bytes carrying ``exif`` (an Exif object or a raw block)."""
    return image_bytes(Image.new("RGB", size, colour), fmt, **({"exif": exif} if exif is not None else {}))


#: a small trip: (file name, EXIF options, colour)
TRIP: list[tuple[str, dict[str, Any], tuple[int, int, int]]] = [
    ("paris_eiffel.jpg", dict(make="Canon", model="Canon EOS 5D Mark IV", lens="EF24-70mm f/2.8L II USM",
                              taken="2019:06:01 14:30:00", offset="+02:00", lat=48.8584, lon=2.2945, orientation=1),
     (200, 120, 60)),
    ("paris_louvre.jpg", dict(make="Canon", model="Canon EOS 5D Mark IV", taken="2019:06:02 10:05:12", offset="+02:00",
                              subsec="40", lat=48.8606, lon=2.3376, orientation=6), (210, 180, 90)),
    ("lyon_night.jpg", dict(make="Apple", model="iPhone 12", lens="iPhone 12 back camera 4.2mm f/1.6",
                            taken="2019:05:31 23:50:00", offset="+02:00", lat=45.7640, lon=4.8357), (20, 30, 80)),
    ("sydney_harbour.jpg", dict(make="FUJIFILM", model="X-T3", taken="2018:12:24 09:00:00", offset="+11:00",
                                lat=-33.8568, lon=151.2153), (40, 140, 220)),
    ("fiji_beach.jpg", dict(make="FUJIFILM", model="X-T3", taken="2018:12:30 17:45:00", lat=-18.1416, lon=178.4419),
     (240, 220, 160)),
    ("scan_1975.jpg", dict(make="EPSON", model="Perfection V600", digitized="1975:07:14 12:00:00"), (150, 130, 110)),
    ("no_exif.jpg", {}, (128, 128, 128)),
    ("broken_clock.jpg", dict(make="NIKON CORPORATION", model="NIKON D750", taken="0000:00:00 00:00:00",
                              gps={GPS_LAT_REF: "N", GPS_LAT: (rational(48), rational(1, 0), rational(0)),
                                   GPS_LON_REF: "E", GPS_LON: dms(2.3)}), (60, 60, 60)),
]


def write_trip(folder) -> dict[str, bytes]:
    """The :data:`TRIP` photos written into ``folder``: name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, options, colour in TRIP:
        data = photo_bytes(make_exif(**options) if options else None, colour=colour)
        (folder / name).write_bytes(data)
        written[name] = data
    return written
