"""Standard crontab meaning over APScheduler: weekday numbering, OR of day fields, errors."""

from datetime import UTC, datetime

import pytest

from app.scheduler.cron import checked_trigger, crontab_trigger, validate_crontab


def fires(expr: str, after: datetime, count: int = 3) -> list[datetime]:
    trigger = crontab_trigger(expr, "UTC")
    out: list[datetime] = []
    previous = None
    now = after
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        assert nxt is not None
        out.append(nxt)
        previous, now = nxt, nxt
    return out


SATURDAY = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN"])
def test_day_of_week_zero_and_seven_are_sunday(dow: str) -> None:
    first = fires(f"0 3 * * {dow}", SATURDAY, 1)[0]
    assert first == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert first.strftime("%A") == "Sunday"


def test_weekday_range_is_monday_to_friday() -> None:
    days = {d.strftime("%a") for d in fires("30 1 * * 1-5", SATURDAY, 7)}
    assert days == {"Mon", "Tue", "Wed", "Thu", "Fri"}


def test_range_ending_on_seven_wraps_to_sunday() -> None:
    days = [d.strftime("%a") for d in fires("0 0 * * 5-7", SATURDAY, 3)]
    assert days == ["Sun", "Fri", "Sat"]


def test_seed_schedules_fire_when_documented() -> None:
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert fires("0 2 * * *", start, 1)[0] == datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    assert fires("0 4 1 * *", start, 2)[1] == datetime(2026, 2, 1, 4, 0, tzinfo=UTC)
    # 2026-01-04 is the first Sunday of 2026.
    assert fires("0 5 * * 0", start, 1)[0] == datetime(2026, 1, 4, 5, 0, tzinfo=UTC)


def test_day_of_month_and_day_of_week_are_ored_like_cron() -> None:
    # "the 15th, and every Monday" in crontab; APScheduler alone would AND them.
    start = datetime(2026, 6, 1, 0, 1, tzinfo=UTC)  # a Monday, just after midnight
    got = fires("0 0 15 * 1", start, 3)
    assert got == [datetime(2026, 6, 8, tzinfo=UTC), datetime(2026, 6, 15, tzinfo=UTC),
                   datetime(2026, 6, 22, tzinfo=UTC)]


def test_steps_and_lists() -> None:
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    got = fires("*/20 0,12 * * *", start, 4)
    assert [d.strftime("%H:%M") for d in got] == ["00:20", "00:40", "12:00", "12:20"]


def test_macros() -> None:
    assert validate_crontab("@daily") == "@daily"
    assert fires("@weekly", SATURDAY, 1)[0].strftime("%A %H:%M") == "Sunday 00:00"


@pytest.mark.parametrize(("expr", "field"), [
    ("61 2 * * *", "minute"),
    ("0 24 * * *", "hour"),
    ("0 2 0 * *", "day_of_month"),
    ("0 2 * 13 *", "month"),
    ("0 2 * * 8", "day_of_week"),
    ("0 2 * * funday", "day_of_week"),
    ("*/0 * * * *", "minute"),
    ("0 5-1 * * *", "hour"),
    ("60 0 2 * * *", "second"),
    # Steps beyond the field's range: APScheduler refuses to build these.
    ("*/60 * * * *", "minute"),
    ("0-59/99999999999999999999 * * * *", "minute"),
    ("0 */24 * * *", "hour"),
    ("0 0 * */13 *", "month"),
    ("*/61 * * * * *", "second"),
])
def test_bad_field_is_named(expr: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_crontab(expr)


def test_wrong_number_of_fields() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        validate_crontab("0 2 * *")


def test_leading_seconds_field() -> None:
    start = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    got = fires("*/5 * * * * *", start, 3)
    assert [d.strftime("%M:%S") for d in got] == ["00:05", "00:10", "00:15"]
    # Five fields still mean second 0.
    assert fires("* * * * *", start, 1)[0] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *",
                                  "0 0 0 31 2 *"])
def test_never_firing_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        validate_crontab(expr)


def test_rare_but_real_days_are_accepted() -> None:
    assert validate_crontab("0 0 29 2 *") == "0 0 29 2 *"  # leap days
    # crontab ORs the day fields: Mondays of February, though February has no 31st.
    assert fires("0 0 31 2 1", datetime(2026, 1, 1, tzinfo=UTC), 1)[0] == \
        datetime(2026, 2, 2, tzinfo=UTC)
    assert validate_crontab("0 0 31 2 1") == "0 0 31 2 1"


@pytest.mark.parametrize("expr", ["\u0663 * * * *", "\u00b2 * * * *", "0 0 * * \u0661",
                                  "*/\u0665 * * * *"])
def test_only_ascii_digits(expr: str) -> None:
    assert not expr.isascii()
    with pytest.raises(ValueError, match="ASCII"):
        validate_crontab(expr)


def test_length_is_capped() -> None:
    with pytest.raises(ValueError, match="longer than 100"):
        validate_crontab("0 " * 60 + "*")


def test_sub_minute_only_when_allowed() -> None:
    with pytest.raises(ValueError, match="more than once a minute"):
        checked_trigger("*/5 * * * * *", "UTC", allow_sub_minute=False)
    assert checked_trigger("*/5 * * * * *", "UTC", allow_sub_minute=True) is not None
    assert checked_trigger("30 * * * * *", "UTC", allow_sub_minute=False) is not None
    assert checked_trigger("@hourly", "UTC", allow_sub_minute=False) is not None


def test_unknown_timezone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Mars/Base"):
        checked_trigger("0 * * * *", "Mars/Base", allow_sub_minute=False)
