"""From the public lead form to a paying customer in headless Chromium.

Run by crates/j1msky/tests/browser_leads.rs with one argument: a JSON file holding the
server's base URL, the fake Stripe's base URL, the mail directory the server writes
.eml files to, and the operator's login. Exits non-zero at the first surprise.
"""

import email
import email.policy
import json
import os
import re
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import Select, WebDriverWait

OWNER = "nora@northwind.test"
PASSWORD = "northwind-owner-password"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def browser(chromium, driver):
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--window-size=1280,2000",
                 # Stripe's hosted checkout page does not exist here: its host resolves to
                 # a closed local port, and the test completes the session at the fake.
                 "--host-resolver-rules=MAP checkout.stripe.test 127.0.0.1:9"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def fill(b, name, value):
    field = b.find_element(By.CSS_SELECTOR, f"[name={name}]")
    field.clear()
    field.send_keys(value)


def log_in(b, base, user, password):
    # Cookies are deleted for the page's own site: be on ours first.
    b.get(f"{base}/start")
    b.delete_all_cookies()
    b.get(f"{base}/login")
    fill(b, "email", user)
    fill(b, "password", password)
    b.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    WebDriverWait(b, 20).until(lambda d: "/login" not in d.current_url)


def invite_link(mail_dir, deadline):
    """The set-password link of the invite mail the server wrote, decoded."""
    while time.time() < deadline:
        for name in sorted(os.listdir(mail_dir)):
            with open(os.path.join(mail_dir, name), "rb") as f:
                msg = email.message_from_binary_file(f, policy=email.policy.default)
            if OWNER not in str(msg["To"]):
                continue
            body = msg.get_body(preferencelist=("plain",)).get_content()
            m = re.search(r"(https?://\S+/set-password/[A-Za-z0-9_-]+)", body)
            if m:
                if re.search(r"(?i)password:\s*\S", body):
                    fail("the invite mail prints a password")
                return m.group(1)
        time.sleep(0.2)
    fail(f"no invite mail to {OWNER} in {mail_dir}: {os.listdir(mail_dir)}")


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def stage_is(b, stage):
    """Waits for the lead page to show `stage`; the page may be reloading while it is read
    (the form posts and redirects), so an element gone stale is read again. Chromium
    reports an element whose page was replaced between the find and the read either as
    stale or as a node that "does not belong to the document" (seen under load)."""

    def shown(d):
        try:
            return d.find_element(By.ID, "stage").text == stage
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return False
            raise

    WebDriverWait(b, 20).until(shown)


def main():
    cfg = json.load(open(sys.argv[1]))
    base = cfg["base"]
    b = browser(cfg["chromium"], cfg["chromedriver"])
    try:
        # 1. The lead fills in the public form.
        b.get(f"{base}/start")
        if "Acme saves a day a week" not in b.page_source:
            fail("the approved testimonial is not on the start page")
        fill(b, "contact_name", "Nora North")
        fill(b, "email", OWNER)
        fill(b, "company", "Northwind Research")
        Select(b.find_element(By.NAME, "use_case")).select_by_visible_text("research")
        fill(b, "use_case_text", "Competitor briefs every week")
        fill(b, "expected_monthly_tasks", "60")
        b.find_element(By.CSS_SELECTOR, "form[action='/start'] button").click()
        WebDriverWait(b, 20).until(lambda d: d.current_url.endswith("/start/thanks"))
        print("lead form sent")

        # 2. The operator qualifies the lead and starts its trial.
        log_in(b, base, cfg["operator"]["email"], cfg["operator"]["password"])
        b.get(f"{base}/admin/leads")
        b.find_element(By.LINK_TEXT, "Northwind Research").click()
        lead_url = b.current_url
        if "starter" not in b.find_element(By.CSS_SELECTOR, ".card.grid").text:
            fail("no starter suggestion for 60 tasks a month")
        fill(b, "notes", "Weekly briefs; a good fit for Starter")
        b.find_element(By.CSS_SELECTOR, "#qualify button").click()
        stage_is(b, "qualified")
        fill(b, "tasks", "10")
        b.find_element(By.CSS_SELECTOR, "#start-trial button").click()
        stage_is(b, "trial")
        print("qualified, trial started")

        # 3. The owner opens the invite link from the mail and sets a password.
        link = invite_link(cfg["mail_dir"], time.time() + 60)
        b.delete_all_cookies()
        b.get(link)
        fill(b, "password", PASSWORD)
        fill(b, "confirm", PASSWORD)
        b.find_element(By.CSS_SELECTOR, "#set-password button").click()
        WebDriverWait(b, 20).until(lambda d: "/login" in d.current_url)
        b.get(link)
        if "already used" not in b.page_source:
            fail("the invite link works twice")
        log_in(b, base, OWNER, PASSWORD)
        print("password set, owner logged in")

        # 4. Checkout on the fake Stripe.
        b.get(f"{base}/app/billing")
        form = b.find_element(By.XPATH, "//form[@action='/app/billing/checkout'][input[@value='starter']]")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(b, 20).until(lambda d: "/c/pay/" in d.current_url)
        session = b.current_url.rsplit("/c/pay/", 1)[1].split("?")[0]
        post_json(f"{cfg['stripe']}/_sim/checkout/{session}/complete", {})
        print(f"checkout {session} completed at the fake Stripe")

        # 5. The customer is paying: the stage history shows every step.
        log_in(b, base, cfg["operator"]["email"], cfg["operator"]["password"])
        deadline = time.time() + 60
        while True:
            b.get(lead_url)
            if b.find_element(By.ID, "stage").text == "active":
                break
            if time.time() > deadline:
                fail(f"the customer did not become active: {b.find_element(By.ID, 'stage').text}")
            time.sleep(0.3)
        rows = b.find_elements(By.CSS_SELECTOR, "#history tr")[1:]
        stages = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
        if stages != ["lead", "qualified", "trial", "active"]:
            fail(f"stage history {stages}")
        print("stage history:", " -> ".join(stages))
    finally:
        b.quit()


if __name__ == "__main__":
    main()
