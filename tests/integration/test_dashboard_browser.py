"""
End to end, in a real headless browser: the live page of a real store.

Chromium opens ``/dashboard`` on the front-end and must show all five
processes with the roles the replicas report; a Buy click places an order
through the public API, and the page shows its number and the stock fall;
the leader is SIGKILLed and the page must name the new leader (how long it
took is printed); the old leader is restarted, orders placed meanwhile, and
the page shows it back and caught up.  The browser's console must hold no
error (a CSP violation, a script error).

Selenium drives Debian's ``chromium`` through ``chromedriver``, both named
by path, so nothing is downloaded.  Every Selenium call blocks, so each runs
in a thread: the reactor goes on supervising the store meanwhile.

Screenshots (before, during and after the failover) go to the directory
``TOYSTORE_SCREENSHOTS`` names, or to the test's own; ``docs/images`` holds
the ones of a run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from toystore.testing import Store

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install '.[test]'")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REASON = None if CHROMIUM and DRIVER else "chromium and chromedriver are needed (Debian: chromium, chromium-driver)"
#: Seconds the page gets to show a change (generous: the machine is shared).
PATIENCE = 30.0


@pytest.fixture
def browser() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    except WebDriverException as e:
        pytest.skip(f"chromium does not start here: {e.msg}")
    yield driver
    driver.quit()


def screenshot(driver: Any, path: Path) -> None:
    """The top of the page (the processes, the leader, the shop and the cache) into ``path``."""
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))


def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("TOYSTORE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def until(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = PATIENCE) -> Any:
    """Wait, in a thread, until ``condition(driver)`` is true; its value."""
    try:
        return await deferToThread(WebDriverWait(driver, timeout, poll_frequency=0.1).until, condition)
    except Exception as e:
        seen = await deferToThread(lambda: (cards(driver), driver.get_log("browser")))
        raise AssertionError(f"the page did not show {what} within {timeout} s; it shows {seen}") from e


def cards(driver: Any) -> dict[str, dict[str, str]]:
    """Each process card: its data-role and data-up."""
    found = {}
    for card in driver.find_elements(By.CSS_SELECTOR, "#processes [data-process]"):
        found[card.get_attribute("data-process")] = {
            "role": card.get_attribute("data-role"),
            "up": card.get_attribute("data-up"),
            "text": card.text,
        }
    return found


def leader_named(driver: Any) -> str:
    return driver.find_element(By.ID, "leader").get_attribute("data-leader") or ""


def stock(driver: Any, toy: str) -> int | None:
    text = driver.find_element(By.CSS_SELECTOR, f'#shop tr[data-toy="{toy}"] .stock').text
    digits = re.sub(r"\D", "", text)  # shown with thousands separators
    return int(digits) if digits else None


async def orders(store: Store, count: int, prefix: str) -> None:
    for n in range(count):
        response = await treq.post(
            f"{store.url}/orders",
            json.dumps({"name": "Fox", "quantity": 1}).encode(),
            headers={"Idempotency-Key": f"{prefix}-{n}"},
            timeout=30,
            persistent=False,
        )
        assert response.code == 200, await response.text()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest_twisted.ensureDeferred
async def test_the_live_page_shows_the_store_working_and_failing_over(
    new_store: Callable[..., Store], browser: Any, tmp_path: Path
) -> None:
    store = new_store()
    await store.start_all()
    statuses = await store.statuses()
    leader = next(i for i, s in statuses.items() if s["serving"])
    out = shots(tmp_path)

    await deferToThread(browser.get, f"{store.url}/dashboard")
    await until(
        browser,
        lambda d: (
            (c := cards(d))
            and len(c) == 5
            and all(card["up"] == "true" for card in c.values())
            and c.get(f"order-{leader}", {}).get("role") == "leader"
            and stock(d, "Tux") is not None
        ),
        "all five processes up, with the leader",
    )
    seen = await deferToThread(cards, browser)
    expected = {f"order-{i}": s["role"] for i, s in statuses.items()}
    assert {name: card["role"] for name, card in seen.items() if name.startswith("order-")} == expected
    assert (seen["frontend"]["role"], seen["catalog"]["role"]) == ("front-end", "catalog")
    assert await deferToThread(leader_named, browser) == str(leader)

    # Buy two Tux with the page's button: the order number appears, and the stock falls by two.
    before = await deferToThread(stock, browser, "Tux")

    def buy(driver: Any) -> None:
        row = driver.find_element(By.CSS_SELECTOR, '#shop tr[data-toy="Tux"]')
        quantity = row.find_element(By.CSS_SELECTOR, "input.quantity")
        quantity.clear()
        quantity.send_keys("2")
        row.find_element(By.CSS_SELECTOR, "button.buy").click()

    await deferToThread(buy, browser)
    number = await until(
        browser, lambda d: d.find_element(By.ID, "last-order").get_attribute("data-order-number"), "the order number"
    )
    response = await treq.get(f"{store.url}/orders/{number}", persistent=False)
    assert json.loads(await response.content())["data"] == {"number": int(number), "name": "Tux", "quantity": 2}
    await until(browser, lambda d: stock(d, "Tux") == before - 2, f"Tux's stock fall from {before} to {before - 2}")
    await deferToThread(screenshot, browser, out / "dashboard-before.png")

    # SIGKILL the leader: the page shows it down, then names the new leader.
    killed = time.monotonic()
    await store.kill(f"order-{leader}")
    await until(browser, lambda d: cards(d)[f"order-{leader}"]["up"] == "false", f"order-{leader} down")
    down_after = time.monotonic() - killed
    await deferToThread(screenshot, browser, out / "dashboard-during.png")
    await until(browser, lambda d: leader_named(d) not in ("", str(leader)), "a new leader")
    named_after = time.monotonic() - killed
    new_leader = int(await deferToThread(leader_named, browser))
    assert new_leader != leader and (await store.status(new_leader))["serving"]
    print(
        f"the page showed order-{leader} down {down_after:.2f} s after its SIGKILL, "
        f"and named order-{new_leader} the leader {named_after:.2f} s after it"
    )
    await orders(store, 40, "while-down")  # the restarted replica has these to catch up on
    await deferToThread(screenshot, browser, out / "dashboard-after.png")

    # Restart it: the page shows it up again and caught up (then leading again: the highest id leads).
    await store.restart(f"order-{leader}")
    await until(
        browser,
        lambda d: (
            cards(d)[f"order-{leader}"]["up"] == "true"
            and any(
                "caught up" in e.text or "answers again" in e.text
                for e in d.find_elements(By.CSS_SELECTOR, "#events li")
            )
        ),
        f"order-{leader} back",
    )
    await store.caught_up()
    await until(browser, lambda d: leader_named(d) == str(leader), f"order-{leader} leading again")
    await deferToThread(screenshot, browser, out / "dashboard-recovered.png")

    errors = [entry for entry in await deferToThread(browser.get_log, "browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
