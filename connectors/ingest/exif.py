"""Photo metadata from EXIF: when, where and with what a photo was taken, as payload fields.

Fields (each one absent when the file does not say, or says something absurd)::

    taken_at        when the photo was taken: Unix seconds (float, to the millisecond), so that
                    date filters (``taken_at >= 2019-06-01``) are numeric ranges on every backend.
                    From DateTimeOriginal (else DateTimeDigitized) with its OffsetTime*, else the
                    offset implied by the GPS time stamp (UTC); with neither, the camera's clock
                    time is read as UTC
    taken_at_local  the same moment as the camera's clock showed it, ISO-8601 text, with the
                    offset when one was recorded: ``2019-06-01T14:30:00+02:00`` (or
                    ``2019-06-01T14:30:00``); ``startswith "2019-06"`` selects by the local calendar
    camera_make, camera_model, lens   Make, Model, LensModel as written (trimmed), at most 128 characters
    gps             ``{"lat": degrees, "lon": degrees}`` (WGS 84, 7 decimals), Qdrant's geo point shape
    orientation     1-8, the EXIF orientation (the pixels are embedded upright whatever it is)

Hostile or absurd values never fail a file: a value that cannot be read (garbage bytes, a wrong
type, a rational with a zero denominator, a date in year 0 or after next year, a position off the
globe or at exactly 0,0, the "no fix" marker of GPS receivers) is dropped with a warning naming
the file, and the other fields are kept. "No date" conventions (blank or all-zero dates) are
dropped silently.

The reader works on the bytes the ingestion already holds: :func:`photo_metadata` parses the
image header and the EXIF block only (no pixel is decoded, nothing is read again).
"""

from __future__ import annotations

import io
import logging
import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

#: every payload field this module writes (reserved: user metadata cannot set them)
PHOTO_FIELDS = ("taken_at", "taken_at_local", "camera_make", "camera_model", "lens", "gps", "orientation")

#: the earliest year taken as a real date (earlier: a camera clock never set, or garbage)
FIRST_YEAR = 1826
#: longest camera / lens text kept (characters)
MAX_TEXT = 128

# EXIF tags (IFD0, the Exif sub-IFD, the GPS sub-IFD)
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112
_DATE_ORIGINAL, _DATE_DIGITIZED = 0x9003, 0x9004
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9011, 0x9012
_SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 0x9291, 0x9292
_LENS_MODEL = 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_TIME, _GPS_STATUS, _GPS_DATE = 1, 2, 3, 4, 7, 9, 29

_DATE_RE = re.compile(r"\s*(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")
_OFFSET_RE = re.compile(r"\s*([+-])(\d{2}):?(\d{2})\s*")


class BadValue(ValueError):
    """An EXIF value that is present but unusable (the message says why)."""


def photo_metadata(data: bytes, source: str) -> dict[str, Any]:
    """The photo fields of an image file's bytes (``{}`` without EXIF or for a non-image).

    ``source`` names the file in warnings. Never raises for anything the bytes hold.
    """
    try:
        block = jpeg_exif_block(data)
        if block is not None:
            exif = Image.Exif()
            exif.load(block)
        else:
            with Image.open(io.BytesIO(data)) as image:
                exif = image.getexif()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return {}  # not an image: decoding reports it
    except Exception as exc:  # noqa: BLE001 - a broken header must not fail the file
        log.warning("%s: EXIF unreadable, ignored (%s: %s)", source, type(exc).__name__, exc)
        return {}
    return fields_from_exif(exif, source)


def jpeg_exif_block(data: bytes) -> bytes | None:
    """The EXIF block (APP1 ``Exif``) of JPEG bytes, found by walking the segment headers up to the
    image data; ``b""`` for a JPEG without one, None for bytes that are no JPEG.

    A few times cheaper than opening the file with Pillow, which also parses every other header
    (measured on a 12 MP JPEG: 0.01-0.02 ms to find and load the block, 0.05-0.09 ms to open),
    for the format most photos are in; other formats go through ``Image.open``.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return b""  # not a segment: a corrupt header, which the decoder will report
        code = data[pos + 1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        if code in (0xDA, 0xD9):  # start of the image data, or its end: no EXIF before it
            return b""
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if code == 0xE1 and data.startswith(b"Exif\x00\x00", pos + 4):
            return data[pos + 4 : pos + 2 + length]
        pos += 2 + length
    return b""


def fields_from_exif(exif: Image.Exif, source: str) -> dict[str, Any]:
    """The photo fields of a parsed EXIF block; each field is read on its own, so one bad value
    loses that field only."""
    fields: dict[str, Any] = {}
    sub, gps = _sub_ifd(exif, _EXIF_IFD, source), _sub_ifd(exif, _GPS_IFD, source)  # parsed once each
    readers: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("date taken", lambda: _read_date(sub, gps)),
        ("camera make", lambda: _text_field("camera_make", exif.get(_MAKE))),
        ("camera model", lambda: _text_field("camera_model", exif.get(_MODEL))),
        ("lens", lambda: _text_field("lens", sub.get(_LENS_MODEL))),
        ("GPS position", lambda: _read_gps(gps)),
        ("orientation", lambda: _read_orientation(exif)),
    )
    for what, read in readers:
        try:
            fields.update(read())
        except BadValue as exc:
            log.warning("%s: EXIF %s dropped: %s", source, what, exc)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a corrupt IFD
            log.warning("%s: EXIF %s unreadable, dropped (%s: %s)", source, what, type(exc).__name__, exc)
    return fields


# ------------------------------------------------------------------------------ date taken


def _sub_ifd(exif: Image.Exif, tag: int, source: str) -> Mapping[int, Any]:
    """The Exif or GPS sub-IFD (empty when absent or unreadable: then its fields are lost, with a warning)."""
    try:
        return exif.get_ifd(tag)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a corrupt IFD
        log.warning("%s: EXIF %s block unreadable, dropped (%s: %s)", source,
                    "GPS" if tag == _GPS_IFD else "Exif", type(exc).__name__, exc)
        return {}


def _read_date(sub: Mapping[int, Any], gps: Mapping[int, Any]) -> dict[str, Any]:
    for date_tag, offset_tag, subsec_tag in (
        (_DATE_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL),
        (_DATE_DIGITIZED, _OFFSET_DIGITIZED, _SUBSEC_DIGITIZED),
    ):
        text = _text(sub.get(date_tag))
        if text is None or _no_date(text):
            continue
        local = parse_exif_date(text) + timedelta(milliseconds=_subsec_ms(sub.get(subsec_tag)))
        offset = parse_offset(sub.get(offset_tag))
        if offset is None:
            offset = gps_clock_offset(gps, local)
        return taken_fields(local, offset)
    return {}


#: how far the camera's clock may be from the GPS time plus a whole quarter-hour offset for that
#: offset to be taken as the zone (a fix a few seconds or minutes old is usual)
GPS_CLOCK_TOLERANCE = timedelta(minutes=2)


def gps_clock_offset(gps: Mapping[int, Any], local: datetime) -> timedelta | None:
    """The zone offset implied by the GPS time stamp (UTC) of a photo whose camera recorded none.

    ``local`` minus GPSDateStamp + GPSTimeStamp, when that is within :data:`GPS_CLOCK_TOLERANCE`
    of a multiple of 15 minutes no larger than 14 hours; None otherwise (no stamp, a stale fix, a
    wrong clock): phones before OffsetTime existed wrote the GPS time, so their zone is known.
    """
    try:
        date = _text(gps.get(_GPS_DATE))
        hms = gps.get(_GPS_TIME)
        if not date or not isinstance(hms, (tuple, list)) or len(hms) != 3:
            return None
        year, month, day = (int(part) for part in re.split("[:-]", date.strip())[:3])
        seconds = sum(float(part) * unit for part, unit in zip(hms, (3600, 60, 1)))
        if not math.isfinite(seconds):
            return None
        utc = datetime(year, month, day) + timedelta(seconds=seconds)
    except (BadValue, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    difference = local - utc
    quarters = round(difference / timedelta(minutes=15))
    offset = timedelta(minutes=15 * quarters)
    if abs(offset) > timedelta(hours=14) or abs(difference - offset) > GPS_CLOCK_TOLERANCE:
        return None
    return offset


def parse_exif_date(text: str) -> datetime:
    """``2019:06:01 14:30:00`` (EXIF's form; ``-`` and ``T`` accepted) as a naive local datetime.

    Raises :class:`BadValue` for a malformed or impossible date, or a year before
    :data:`FIRST_YEAR` or after next year.
    """
    match = _DATE_RE.match(text)
    if match is None:
        raise BadValue(f"{text!r} is not a date")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
    last_year = datetime.now(timezone.utc).year + 1
    if not FIRST_YEAR <= year <= last_year:
        raise BadValue(f"{text!r}: year {year} is not plausible ({FIRST_YEAR}-{last_year})")
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise BadValue(f"{text!r}: {exc}") from None


def parse_offset(value: Any) -> timedelta | None:
    """An OffsetTime* value (``+02:00``) as a timedelta; None when absent or unusable (an
    unusable offset only loses the zone, not the date)."""
    text = _text(value)
    if text is None:
        return None
    match = _OFFSET_RE.fullmatch(text)
    if match is None:
        log.info("EXIF time offset %r is not +HH:MM; the date is kept without a zone", text)
        return None
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1)
    if abs(offset) > timedelta(hours=14) or int(minutes) >= 60:
        log.info("EXIF time offset %r is past +-14:00; the date is kept without a zone", text)
        return None
    return offset


def taken_fields(local: datetime, offset: timedelta | None) -> dict[str, Any]:
    """``taken_at`` (Unix seconds) and ``taken_at_local`` of a camera clock time and its offset."""
    zone = timezone.utc if offset is None else timezone(offset)
    moment = local.replace(tzinfo=zone)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    millis = round((moment - epoch) / timedelta(milliseconds=1))
    spec = "milliseconds" if local.microsecond else "seconds"
    shown = local.isoformat(timespec=spec) if offset is None else moment.isoformat(timespec=spec)
    return {"taken_at": millis / 1000, "taken_at_local": shown}


def _no_date(text: str) -> bool:
    """The conventions for "no date": blank, or all zeros (``0000:00:00 00:00:00``)."""
    return not text.strip(" :-0T")


def _subsec_ms(value: Any) -> int:
    """SubSecTime* (``"25"`` = .25 s) in whole milliseconds; 0 when absent or not digits."""
    text = _text(value)
    if not text or not text.strip().isdigit():
        return 0
    digits = text.strip()[:3].ljust(3, "0")
    return int(digits)


# ------------------------------------------------------------------------------ camera, lens


def _text_field(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    text = clean_text(value)
    return {name: text} if text else {}


def clean_text(value: Any) -> str:
    """An EXIF ASCII value trimmed of NULs, padding and control characters ("" when nothing is left).

    Raises :class:`BadValue` for a value that is no text or is longer than :data:`MAX_TEXT`.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(f"{value[:20]!r} is not text") from None
    if not isinstance(value, str):
        raise BadValue(f"{type(value).__name__} {value!r:.40} is not text")
    value = value.split("\x00", 1)[0]
    text = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()
    if len(text) > MAX_TEXT:
        raise BadValue(f"{len(text)} characters, more than {MAX_TEXT}")
    return text


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise BadValue(f"{type(value).__name__} {value!r:.40} where text was expected")
    return value.split("\x00", 1)[0]


# ------------------------------------------------------------------------------ GPS


def _read_gps(gps: Mapping[int, Any]) -> dict[str, Any]:
    if _GPS_LAT not in gps and _GPS_LON not in gps:
        return {}
    if (_text(gps.get(_GPS_STATUS)) or "A").strip().upper() == "V":
        raise BadValue("the receiver marked the position void (GPSStatus V)")
    lat = _degrees(gps.get(_GPS_LAT), _text(gps.get(_GPS_LAT_REF)), "NS", 90, "latitude")
    lon = _degrees(gps.get(_GPS_LON), _text(gps.get(_GPS_LON_REF)), "EW", 180, "longitude")
    if lat == 0 and lon == 0:
        raise BadValue("0,0 is what receivers without a fix write")
    return {"gps": {"lat": lat, "lon": lon}}


def _degrees(value: Any, ref: str | None, refs: str, limit: float, what: str) -> float:
    """Degrees, minutes, seconds (three rationals) and a hemisphere letter -> signed decimal degrees."""
    if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        raise BadValue(f"{what} {value!r:.60} is not degrees, minutes, seconds")
    try:
        parts = [float(part) for part in value]
    except (TypeError, ValueError, ZeroDivisionError):
        raise BadValue(f"{what} {value!r:.60} is not numbers") from None
    parts += [0.0] * (3 - len(parts))
    if not all(math.isfinite(p) and p >= 0 for p in parts) or parts[1] >= 60 or parts[2] >= 60:
        raise BadValue(f"{what} {tuple(parts)} is not degrees, minutes (<60), seconds (<60)")
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    if degrees > limit:
        raise BadValue(f"{what} {degrees:g} is past {limit:g} degrees")
    hemisphere = (ref or "").strip().upper()
    if hemisphere not in refs or len(hemisphere) != 1:
        raise BadValue(f"{what} reference {ref!r} is not {' or '.join(refs)}")
    return round(-degrees if hemisphere == refs[1] else degrees, 7)


# ------------------------------------------------------------------------------ orientation


def _read_orientation(exif: Image.Exif) -> dict[str, Any]:
    value = exif.get(_ORIENTATION)
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise BadValue(f"{value!r:.40} is not 1-8")
    return {"orientation": value}


__all__ = ["FIRST_YEAR", "MAX_TEXT", "PHOTO_FIELDS", "BadValue", "clean_text", "fields_from_exif", "gps_clock_offset",
           "jpeg_exif_block", "parse_exif_date", "parse_offset", "photo_metadata", "taken_fields"]
