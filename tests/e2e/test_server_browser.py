"""The MLflow UI as a teammate sees it: Debian's headless Chromium, driven by Selenium, against the
authenticated TLS server (`make test-slow`: installing Chromium takes a minute of CI's budget).

A browser logs in with HTTP basic authentication (the header its login prompt sends), opens the study, reads
the runs table, opens the compare view of two runs, and is refused with a wrong password. Screenshots go to
test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys
from test_mlflow_server import Stack, clean_login, client, stack  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("chromedriver"), reason="no chromedriver: apt-get install chromium-driver"),
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def browser(user: str, password: str):
    """Headless Chromium sending `user`'s login with every request, trusting the server's self-signed
    certificate (on loopback, for this test only)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or ""
    options.accept_insecure_certs = True
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the HTTP status of each answer
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    return driver


def wait_for_text(driver, texts: list[str], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(text in body for text in texts):
            return body
        time.sleep(0.5)
    raise AssertionError(f"page never showed {texts}; it shows:\n{driver.find_element('tag name', 'body').text[:2000]}")


def click_text(driver, text: str, seconds: float = 30) -> None:
    """Click the innermost visible element showing exactly `text` (a button, a menu entry)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for element in driver.find_elements("xpath", f"//*[normalize-space(text())='{text}']"):
            if element.is_displayed():
                element.click()
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing showing {text!r} to click")


def test_a_teammate_browses_the_study_and_compares_two_runs(stack, clean_login):  # noqa: F811
    stack.tool("grant", "alice", "browsed", "EDIT")
    alice = client(stack, "alice")
    experiment_id = alice.get_experiment_by_name("browsed").experiment_id
    run_ids = []
    for lr, accuracy in (("0.01", 0.91), ("0.05", 0.87)):
        run_id = alice.create_run(experiment_id, run_name=f"lr-{lr}").info.run_id
        alice.log_param(run_id, "train.optimizer.lr", lr)
        alice.log_metric(run_id, "test_accuracy", accuracy)
        alice.set_terminated(run_id)
        run_ids.append(run_id)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    driver = browser("bob", stack.password("bob"))
    try:
        driver.get(f"{stack.uri}/#/experiments/{experiment_id}/runs")
        wait_for_text(driver, ["browsed", "lr-0.01", "lr-0.05"])
        driver.save_screenshot(str(ARTIFACTS / "runs.png"))
        # MLflow 3's table starts with run facts only: add the metric column as a user does, from "Columns".
        click_text(driver, "Columns")
        click_text(driver, "test_accuracy")
        driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        table = wait_for_text(driver, ["lr-0.01", "lr-0.05", "0.91", "0.87"])  # the column test_accuracy added
        assert table.index("lr-0.05") < table.index("lr-0.01"), "newest first"
        driver.save_screenshot(str(ARTIFACTS / "runs_table.png"))
        ids = ",".join(f'"{r}"' for r in run_ids)
        driver.get(f"{stack.uri}/#/compare-runs?runs=[{ids}]&experiments=[\"{experiment_id}\"]")
        compared = wait_for_text(driver, ["train.optimizer.lr", "0.01", "0.05"])
        assert "test_accuracy" in compared
        driver.save_screenshot(str(ARTIFACTS / "compare.png"))
    finally:
        driver.quit()


def test_a_wrong_password_is_refused_in_the_browser(stack):  # noqa: F811
    driver = browser("bob", "not-bobs-password")
    try:
        driver.get(f"{stack.uri}/#/experiments")
        time.sleep(3)  # what would render, given the chance
        driver.save_screenshot(str(ARTIFACTS / "refused.png"))
        assert "Experiments" not in driver.find_element("tag name", "body").text, "the UI rendered for a wrong login"
        answers = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        statuses = [a["params"]["response"]["status"] for a in answers if a["method"] == "Network.responseReceived"
                    and a["params"]["response"]["url"].startswith(stack.uri)]
        assert statuses and set(statuses) == {401}, statuses
    finally:
        driver.quit()
