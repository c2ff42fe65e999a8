"""The EXIF reader on generated photos: what cameras write, and hostile or absurd values."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clip_ingest.connectors.ingest.exif import MAX_TEXT, jpeg_exif_block, photo_metadata
from exif_photos import (
    GPS_LAT,
    GPS_LAT_REF,
    GPS_LON,
    GPS_LON_REF,
    GPS_STATUS,
    GPS_TIME,
    GPS_DATE,
    dms,
    make_exif,
    photo_bytes,
    rational,
)

CANON = dict(make="Canon\x00", model="Canon EOS 5D Mark IV", lens="EF24-70mm f/2.8L II USM", taken="2019:06:01 14:30:00",
             offset="+02:00", subsec="25", lat=48.8566, lon=2.3522, orientation=6)


def read(**options) -> dict:
    return photo_metadata(photo_bytes(make_exif(**options)), "photo.jpg")


def test_reads_what_a_camera_writes():
    assert read(**CANON) == {
        "taken_at": 1559392200.25,  # 2019-06-01T12:30:00.250Z
        "taken_at_local": "2019-06-01T14:30:00.250+02:00",
        "camera_make": "Canon",
        "camera_model": "Canon EOS 5D Mark IV",
        "lens": "EF24-70mm f/2.8L II USM",
        "gps": {"lat": 48.8566, "lon": 2.3522},
        "orientation": 6,
    }


def test_without_an_offset_the_clock_time_is_read_as_utc_and_shown_without_a_zone():
    fields = read(taken="2018:12:30 17:45:00")
    assert fields == {"taken_at": 1546191900.0, "taken_at_local": "2018-12-30T17:45:00"}


@pytest.mark.parametrize(
    "gps_date, gps_time, local",
    [
        ("2015:08:01", (rational(10), rational(29), rational(41.5)), "2015-08-01T12:30:00+02:00"),  # a fix 18.5 s old
        ("2015:07:31", (rational(23), rational(30), rational(0)), "2015-08-01T12:30:00+13:00"),  # the day before in UTC
        ("2015:08:01", (rational(5), rational(45), rational(0)), "2015-08-01T12:30:00+06:45"),  # Nepal-like quarter
        ("2015:08:01", (rational(10), rational(20), rational(0)), "2015-08-01T12:30:00"),  # 10 min off: a stale fix
        ("2015:08:01", (rational(10), rational(1, 0), rational(0)), "2015-08-01T12:30:00"),  # NaN minutes
        ("garbage", (rational(10), rational(30), rational(0)), "2015-08-01T12:30:00"),
    ],
)
def test_without_an_offset_the_gps_time_stamp_gives_the_zone_when_it_agrees(gps_date, gps_time, local):
    fields = read(taken="2015:08:01 12:30:00", lat=48.8, lon=2.3, gps={GPS_DATE: gps_date, GPS_TIME: gps_time})
    assert fields["taken_at_local"] == local and fields["gps"] == {"lat": 48.8, "lon": 2.3}
    assert read(taken="2015:08:01 12:30:00", offset="-03:00", gps={GPS_DATE: gps_date, GPS_TIME: gps_time})[
        "taken_at_local"] == "2015-08-01T12:30:00-03:00"  # a recorded offset wins


def test_digitized_date_when_there_is_no_original_and_hemispheres_give_the_sign():
    fields = read(digitized="1975:07:14 12:00:00", lat=-33.8568, lon=-70.6483)
    assert fields["taken_at_local"] == "1975-07-14T12:00:00" and fields["taken_at"] == 174571200.0
    assert fields["gps"] == {"lat": -33.8568, "lon": -70.6483}


def test_png_exif_is_read_through_pillow_and_files_without_exif_or_no_image_give_nothing():
    png = photo_bytes(make_exif(make="Sony", taken="2020:02:29 08:00:00", offset="-05:00"), fmt="PNG")
    assert photo_metadata(png, "a.png") == {"camera_make": "Sony", "taken_at": 1582981200.0,
                                            "taken_at_local": "2020-02-29T08:00:00-05:00"}
    assert photo_metadata(photo_bytes(), "plain.jpg") == {}
    assert photo_metadata(b"<html>not an image</html>", "page.jpg") == {}
    assert photo_metadata(b"", "empty.jpg") == {}


@pytest.mark.parametrize(
    "options, dropped, warning",
    [
        (dict(taken="0000:06:01 10:00:00"), {"taken_at", "taken_at_local"}, "year 0 is not plausible"),
        (dict(taken="9999:12:31 23:59:59"), {"taken_at", "taken_at_local"}, "year 9999 is not plausible"),
        (dict(taken="2019:13:01 10:00:00"), {"taken_at", "taken_at_local"}, "month must be in 1..12"),
        (dict(taken="last tuesday"), {"taken_at", "taken_at_local"}, "is not a date"),
        (dict(lat=95.0), {"gps"}, "latitude 95 is past 90"),
        (dict(gps={GPS_LAT_REF: "N", GPS_LAT: (rational(48), rational(1, 0), rational(0)), GPS_LON_REF: "E",
                   GPS_LON: dms(2.3)}), {"gps"}, "latitude"),  # a zero denominator: NaN minutes
        (dict(gps={GPS_LAT_REF: "N", GPS_LAT: (rational(48), rational(75), rational(0)), GPS_LON_REF: "E",
                   GPS_LON: dms(2.3)}), {"gps"}, "minutes (<60)"),
        (dict(gps={GPS_LAT_REF: "X", GPS_LAT: dms(48.8), GPS_LON_REF: "E", GPS_LON: dms(2.3)}), {"gps"}, "not N or S"),
        (dict(gps={GPS_LAT_REF: "N", GPS_LAT: (rational(48), rational(1), rational(2), rational(3)), GPS_LON_REF: "E", GPS_LON: dms(2.3)}), {"gps"}, "not degrees"),
        (dict(gps={GPS_LAT_REF: "N", GPS_LAT: dms(0), GPS_LON_REF: "E", GPS_LON: dms(0)}), {"gps"}, "0,0"),
        (dict(gps={GPS_STATUS: "V", GPS_LAT_REF: "N", GPS_LAT: dms(48.8), GPS_LON_REF: "E", GPS_LON: dms(2.3)}), {"gps"},
         "void"),
        (dict(orientation=9), {"orientation"}, "is not 1-8"),
        (dict(make="x" * (MAX_TEXT + 1)), {"camera_make"}, "more than 128"),
    ],
)
def test_absurd_values_are_dropped_with_a_warning_and_the_rest_is_kept(options, dropped, warning, caplog):
    good = dict(make="Canon", model="EOS", taken="2019:06:01 14:30:00", lat=48.8, lon=2.3, orientation=1)
    assert set(read(**good)) >= dropped  # each of these fields is read when its value is sound
    caplog.set_level(logging.WARNING, logger="clip_ingest.connectors.ingest.exif")
    if "gps" in options:  # raw GPS tags instead of the sound position
        good = {k: v for k, v in good.items() if k not in ("lat", "lon")}
    fields = read(**{**good, **options})
    assert not dropped & set(fields)
    assert set(fields) == {"camera_make", "camera_model", "taken_at", "taken_at_local", "gps", "orientation"} - dropped
    assert any(warning in r.getMessage() and "photo.jpg" in r.getMessage() for r in caplog.records), caplog.text


def test_no_date_conventions_and_bad_offsets_lose_only_what_they_must(caplog):
    caplog.set_level(logging.WARNING)
    assert read(taken="0000:00:00 00:00:00", make="A") == {"camera_make": "A"}
    assert read(taken="    :  :     :  :  ", make="A") == {"camera_make": "A"}
    assert not caplog.records  # "no date" is not an error
    assert read(taken="2019:06:01 14:30:00", offset="+25:00") == {"taken_at": 1559399400.0,
                                                                   "taken_at_local": "2019-06-01T14:30:00"}
    assert read(taken="2019:06:01 14:30:00\x00\x00", make="  Canon  ", model="EOS\x01 R") == {
        "taken_at": 1559399400.0, "taken_at_local": "2019-06-01T14:30:00", "camera_make": "Canon", "camera_model": "EOS R"}


def test_garbage_exif_blocks_never_fail(caplog):
    caplog.set_level(logging.WARNING)
    for block in (b"Exif\x00\x00garbage", b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff", b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"):
        assert photo_metadata(photo_bytes(block), "bad.jpg") == {}
    # an IFD pointing at itself: read once, no loop
    loop = b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + b"\x01\x00" + b"\x69\x87\x04\x00\x01\x00\x00\x00\x08\x00\x00\x00" + b"\x00" * 4
    assert photo_metadata(photo_bytes(loop), "loop.jpg") == {}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300), st.sampled_from([b"Exif\x00\x00II*\x00\x08\x00\x00\x00", b"Exif\x00\x00MM\x00*\x00\x00\x00\x08", b""]))
def test_random_exif_bytes_never_raise_and_only_give_sound_fields(tail, head):
    fields = photo_metadata(photo_bytes(head + tail if head else b"Exif\x00\x00" + tail), "fuzz.jpg")
    assert set(fields) <= {"taken_at", "taken_at_local", "camera_make", "camera_model", "lens", "gps", "orientation"}
    if "gps" in fields:
        assert -90 <= fields["gps"]["lat"] <= 90 and -180 <= fields["gps"]["lon"] <= 180
    if "orientation" in fields:
        assert fields["orientation"] in range(1, 9)


def test_the_jpeg_segment_walk_finds_the_block_pillow_finds():
    data = photo_bytes(make_exif(**CANON))
    with Image.open(io.BytesIO(data)) as image:
        assert jpeg_exif_block(data)[6:] == image.info["exif"][6:]
    assert jpeg_exif_block(photo_bytes()) == b""
    assert jpeg_exif_block(photo_bytes(fmt="PNG")) is None
    for cut in (3, 10, 40, 200):  # truncated anywhere in the headers: no error
        assert isinstance(photo_metadata(data[:cut], "cut.jpg"), dict)
