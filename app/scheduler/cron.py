"""Standard crontab expressions turned into APScheduler triggers.

APScheduler 3.x numbers weekdays from Monday (0) and ANDs day-of-month with
day-of-week; crontab numbers from Sunday (0 and 7) and ORs the two when both are
restricted. We keep the crontab meaning. A sixth, leading field of seconds is
accepted (as in Quartz and systemd) for schedules finer than a minute.

An expression is checked by building the real trigger and asking it for a fire
time, so whatever is saved can be loaded and fires within `HORIZON`.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

MAX_LENGTH = 100
# An expression that matches no time in this window is refused as never firing
# (29 February comes at least once in any five years).
HORIZON = timedelta(days=5 * 366)
ASCII_NUMBER = re.compile(r"[0-9]+")
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


SECOND = CronField("second", 0, 59)
FIELDS = (
    CronField("minute", 0, 59),
    CronField("hour", 0, 23),
    CronField("day_of_month", 1, 31),
    CronField("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                               "sep", "oct", "nov", "dec")),
    CronField("day_of_week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
APS_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _value(spec: CronField, token: str) -> int:
    lowered = token.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + (1 if spec.name == "month" else 0)
    # str.isdigit() also accepts other scripts' digits and superscripts.
    if not ASCII_NUMBER.fullmatch(token):
        raise ValueError(f"{spec.name}: {token!r} is not a number"
                         + (f" or one of {', '.join(spec.names)}" if spec.names else ""))
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise ValueError(f"{spec.name}: {number} is outside {spec.low}-{spec.high}")
    return number


def _step(spec: CronField, step_text: str, low: int, high: int) -> int:
    if not ASCII_NUMBER.fullmatch(step_text) or int(step_text) == 0:
        raise ValueError(f"{spec.name}: step {step_text!r} must be a positive number")
    step = int(step_text)
    if step > high - low:
        # APScheduler refuses these too; crontab would select only the first value.
        raise ValueError(f"{spec.name}: step {step} is larger than the range {low}-{high}")
    return step


def expand_field(spec: CronField, text: str) -> set[int]:
    """The set of values a crontab field selects; ValueError names the field."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{spec.name}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(spec, first), _value(spec, last)
            if low > high:
                raise ValueError(f"{spec.name}: range {base!r} runs backwards")
        else:
            low = _value(spec, base)
            high = spec.high if step_text else low
        step = _step(spec, step_text, low, high) if step_text else 1
        values.update(range(low, high + 1, step))
    if spec.name == "day_of_week" and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def _split(expression: str) -> list[str]:
    """The six fields (second first; "0" when the expression has the usual five), checked."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"cron expression is longer than {MAX_LENGTH} characters")
    if not expression.isascii():
        raise ValueError("cron expression must be plain ASCII")
    expression = MACROS.get(expression.strip().lower(), expression)
    parts = expression.split()
    if len(parts) == 5:
        parts.insert(0, "0")
    if len(parts) != 6:
        raise ValueError(
            f"cron expression {expression!r} must have 5 fields "
            f"(minute hour day_of_month month day_of_week) or 6 with a leading second, "
            f"got {len(parts)}"
        )
    for spec, text in zip((SECOND, *FIELDS), parts, strict=True):
        expand_field(spec, text)
    return parts


def _trigger(parts: list[str], timezone: str, end_date: datetime | None = None) -> BaseTrigger:
    second, minute, hour, dom, month, dow = parts
    days = sorted(expand_field(FIELDS[4], dow))
    weekday_names = ",".join(APS_WEEKDAYS[d] for d in days)

    def cron(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=day_of_week, timezone=timezone, end_date=end_date)

    dom_restricted = not dom.startswith("*")
    dow_restricted = not dow.startswith("*")
    try:
        if dom_restricted and dow_restricted:
            return OrTrigger([cron(dom, "*"), cron("*", weekday_names)])
        return cron(dom, weekday_names if dow_restricted else "*")
    except LookupError as exc:  # zoneinfo's ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"timezone: unknown time zone {timezone!r}") from exc
    except ValueError as exc:  # what our own checks let through, APScheduler has the last word
        raise ValueError(f"cron expression {' '.join(parts)!r}: {exc}") from exc


def _check_fires(expression: str, parts: list[str], timezone: str) -> None:
    # The end date stops APScheduler's search early (without it, it runs to the year 9999).
    # An OrTrigger fires when any part does, so each part gets the same end date.
    now = datetime.now(UTC)
    if _trigger(parts, timezone, now + HORIZON).get_next_fire_time(None, now) is None:
        raise ValueError(f"cron expression {expression.strip()!r} never fires "
                         f"(no time matches in the next {HORIZON.days // 366} years)")


def validate_crontab(expression: str) -> str:
    """Check a crontab expression (APScheduler builds it and it fires), naming the bad field."""
    _check_fires(expression, _split(expression), "UTC")
    return expression.strip()


def checked_trigger(expression: str, timezone: str, *, allow_sub_minute: bool) -> BaseTrigger:
    """The trigger of a schedule that may be saved or loaded; ValueError says why not."""
    parts = _split(expression)
    if not allow_sub_minute and len(expand_field(SECOND, parts[0])) > 1:
        raise ValueError(f"second: {parts[0]!r} fires more than once a minute "
                         "(allowed only with the setting schedules.allow_sub_minute)")
    _check_fires(expression, parts, timezone)
    return _trigger(parts, timezone)


def crontab_trigger(expression: str, timezone: str) -> BaseTrigger:
    """An APScheduler trigger that fires exactly when crontab would."""
    return _trigger(_split(expression), timezone)
