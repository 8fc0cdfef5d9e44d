"""Drives headless Chromium over the operator's board and a customer's /app home.

Run by crates/j1msky/tests/browser_board.rs with one argument: a JSON file holding
the server's base URL, the logins and the numbers the fixture must show (computed by
the test with `kpis::for_month`). Exits non-zero with a message at the first surprise.
"""

import json
import sys

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def browser(chromium, driver):
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--window-size=1280,2000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def log_in(b, base, email, password):
    b.delete_all_cookies()
    b.get(f"{base}/login")
    b.find_element(By.CSS_SELECTOR, "input[name=email]").send_keys(email)
    field = b.find_element(By.CSS_SELECTOR, "input[name=password]")
    field.send_keys(password)
    field.submit()
    WebDriverWait(b, 20).until(lambda d: "/login" not in d.current_url)


def tiles(b):
    """data-kpi → every data-value shown under that name (this month first)."""
    out = {}
    for el in b.find_elements(By.CSS_SELECTOR, "[data-kpi][data-value]"):
        out.setdefault(el.get_attribute("data-kpi"), []).append(el.get_attribute("data-value"))
    return out


MISSING = object()


def lookup(kpis, dotted):
    """The number a tile shows, from `kpi --json`'s figures: its dotted path, except the
    two tiles that pick from a list or an object (MISSING when neither)."""
    if dotted == "customers.activation_bp":
        # The chosen month's own signup cohort.
        cohorts = [c for c in kpis["customers"]["activation"] if c["month"] == kpis["month"]]
        return cohorts[0]["rate_bp"] if cohorts else None
    if dotted == "customers.nps":
        nps = kpis["customers"]["nps"]
        return nps["score"] if nps else None
    v = kpis
    for part in dotted.split("."):
        if not isinstance(v, dict) or part not in v:
            return MISSING
        v = v[part]
    return v


def check_board(b, kpis, must, what):
    shown = tiles(b)
    if not shown:
        fail(f"{what}: no [data-kpi][data-value] tiles on {b.current_url}")
    for key in must:
        if key not in shown:
            fail(f"{what}: no tile {key} (tiles: {sorted(shown)})")
    checked = 0
    for key, values in shown.items():
        want = lookup(kpis, key)
        if want is MISSING:
            if key.startswith(("app.", "what_if.", "evening.")):
                continue
            fail(f"{what}: tile {key} is not a number of the fixture's figures")
        if isinstance(want, bool) or not (want is None or isinstance(want, int)):
            fail(f"{what}: {key} is {want!r} in the fixture's figures, not a number")
        # An unknown number (a rate without a denominator) is an empty data-value.
        expected = "" if want is None else str(want)
        if expected not in values:
            fail(f"{what}: {key} shows {values}, the fixture says {want}")
        checked += 1
    print(f"ok: {what}: {checked} tiles match the fixture")


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    base = cfg["base"]
    b = browser(cfg["chromium"], cfg["chromedriver"])
    try:
        # The operator's home is the board.
        log_in(b, base, cfg["operator"]["email"], cfg["operator"]["password"])
        b.get(f"{base}/admin")
        check_board(b, cfg["all"], cfg["must"], "board, all plans and teams")
        # A series is a <path> or, as plotters writes lines, a <polyline>.
        paths = b.find_elements(By.CSS_SELECTOR, "svg.chart path, svg.chart polyline")
        if not paths:
            fail(f"no chart drawn: no svg.chart with a path ({len(b.find_elements(By.CSS_SELECTOR, 'svg.chart'))} svg.chart)")
        # A series over months has three points or more; axes and ticks have two.
        def points(p):
            d = p.get_attribute("d")
            if d:
                return sum(d.count(c) for c in "MLCQHVAmlcqhva")
            return len((p.get_attribute("points") or "").split())
        drawn = [p for p in paths if points(p) >= 3]
        if not drawn:
            fail(f"no series drawn: {len(paths)} paths, none with three points or more")
        print(f"ok: {len(drawn)} chart series drawn")

        # The filter form: one team narrows the numbers.
        form = b.find_element(By.CSS_SELECTOR, "form#filters")
        team = form.find_element(By.CSS_SELECTOR, "[name=team]")
        if team.tag_name == "select":
            # An <option> without a value attribute submits its text.
            choice = Select(team)
            try:
                choice.select_by_value(cfg["team"])
            except NoSuchElementException:
                choice.select_by_visible_text(cfg["team"])
        else:
            team.clear()
            team.send_keys(cfg["team"])
        old = b.find_element(By.CSS_SELECTOR, "[data-kpi]")
        form.submit()
        WebDriverWait(b, 20).until(ec.staleness_of(old))
        if f"team={cfg['team']}" not in b.current_url:
            fail(f"the filter did not reach the URL: {b.current_url}")
        check_board(b, cfg["filtered"], cfg["must"], f"board, team {cfg['team']}")
        key = cfg["changes"]
        before, after = lookup(cfg["all"], key), lookup(cfg["filtered"], key)
        if before == after:
            fail(f"fixture error: {key} is {before} with and without the filter")
        if str(after) not in tiles(b).get(key, []):
            fail(f"{key} did not change with the filter: {tiles(b).get(key)}")
        print(f"ok: the filter changed {key} from {before} to {after}")

        # A customer's home shows its own usage.
        owner = cfg["owner"]
        log_in(b, base, owner["email"], owner["password"])
        b.get(f"{base}/app")
        if "/login" in b.current_url:
            fail("the owner is not signed in on /app")
        text = b.find_element(By.TAG_NAME, "body").text
        tasks = str(owner["tasks"])
        shown = tiles(b)
        mine = shown.get("app.succeeded", shown.get("usage.tasks_completed"))
        if mine is not None:
            if tasks not in mine:
                fail(f"/app shows {mine} tasks, the fixture has {tasks}")
        elif tasks not in text or "task" not in text.lower():
            fail(f"/app does not show this month's {tasks} tasks: {text[:2000]}")
        if owner["other"] in text:
            fail(f"/app shows another customer's name ({owner['other']})")
        print(f"ok: the customer's /app home shows its {tasks} tasks")
    finally:
        b.quit()


if __name__ == "__main__":
    main()
