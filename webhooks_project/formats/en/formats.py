"""Dates in one format everywhere in the admin (ISO 8601 order, UTC as TIME_ZONE says), instead
of the English locale's "Dec. 7, 2026, 6:59 a.m."."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i:s"
