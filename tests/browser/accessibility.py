"""Run axe-core (vendored, pinned) in a page and return its serious and critical findings,
in Chromium through Playwright or in any browser through Selenium (WebKit)."""
from __future__ import annotations

from pathlib import Path

AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
# WCAG 2.1 A/AA rules and best practices; a summary of each violation.
RUN_AXE = """async () => {
  const r = await axe.run(document, { runOnly: { type: 'tag',
    values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
  return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')) }));
}"""


def _serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def serious_violations(page) -> list[dict]:
    """axe-core's findings in a Playwright page; only the serious and critical impacts."""
    page.add_script_tag(path=str(AXE))
    return _serious(page.evaluate(RUN_AXE))


def serious_violations_webdriver(driver) -> list[dict]:
    """The same for a Selenium WebDriver's current page (WebKitGTK has no Playwright here)."""
    if not driver.execute_script("return typeof axe !== 'undefined'"):
        driver.execute_script(AXE.read_text(encoding="utf-8"))
    done = driver.execute_async_script(
        f"const done = arguments[arguments.length - 1]; ({RUN_AXE})()"
        ".then((found) => done({found}), (error) => done({error: String(error)}));")
    if "error" in done:
        raise RuntimeError(f"axe failed in the page: {done['error']}")
    return _serious(done["found"])
