"""Browser tests of the operator panel: a real coordinator with in-process
tills (`tillswarm demo`), one headless Chromium driven by Selenium, and the
helpers the tests share (login, navigation, waits, catalogue look-ups).

Every wait is bounded (WAIT by default, LONG at most); the demo is stopped
at the end of the session whatever happened.
"""
import io
import json
import os
import queue
import random
import re
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / os.environ.get("CARGO_TARGET_DIR", "target")  # (an absolute CARGO_TARGET_DIR wins)
BINARY = TARGET / "debug" / "tillswarm"
SHOTS = TARGET / "screenshots"
CATALOGUES = REPO / "web" / "static" / "js" / "i18n"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20   # seconds: the usual bound of a wait
LONG = 60   # seconds: the longest wait (never more)

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online


# ---------------------------------------------------------------- the demo

def wait_for_binary(limit=240):
    """Waits until the binary exists and has not changed for 3 s (a build may be writing it)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            st = BINARY.stat()
            if os.access(BINARY, os.X_OK) and time.time() - st.st_mtime > 3:
                time.sleep(0.5)
                if BINARY.stat().st_mtime == st.st_mtime and BINARY.stat().st_size == st.st_size:
                    return
        except FileNotFoundError:
            pass
        time.sleep(1)
    pytest.fail(f"{BINARY} missing or still being written after {limit} s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """A running `tillswarm demo`: url, password, the process and its log."""

    def __init__(self, data_dir, log_path):
        self.port = free_port()
        self.log_path = log_path
        self.lines = queue.Queue()
        self.stderr = open(log_path, "w")
        cmd = [str(BINARY), "demo", "--listen", f"127.0.0.1:{self.port}", "--data", str(data_dir),
               "--stores", "2", "--tills", "4", "--package-mb", "1", "--wan-mbit", "50"]
        for attempt in range(10):
            try:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                             text=True, cwd=REPO)
                break
            except OSError as e:  # ETXTBSY: the build is writing the binary right now
                if attempt == 9:
                    raise
                print(f"starting the demo failed ({e}); retrying")
                time.sleep(3)
                wait_for_binary()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self.password = None
        seen = []
        deadline = time.monotonic() + 60
        while (self.url is None or self.password is None) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            m = re.match(r"\s*panel:\s+(http://\S+/)", line)
            if m:
                self.url = m.group(1)
            m = re.match(r"\s*login:\s+user admin, password (\S+)", line)
            if m:
                self.password = m.group(1)
        if self.url is None or self.password is None:
            self.stop()
            pytest.fail("the demo did not print its panel URL and password within 60 s; stdout:\n"
                        + "".join(seen) + "\nstderr tail:\n" + Path(log_path).read_text()[-2000:])

    def _pump(self):
        for line in self.proc.stdout:  # drained to the end so the pipe never fills
            self.lines.put(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stderr.close()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    wait_for_binary()
    base = tmp_path_factory.mktemp("demo")
    d = Demo(base / "data", base / "demo-stderr.log")
    yield d
    d.stop()


# ---------------------------------------------------------------- packages

def build_package(path, name, version, payload_size=512 * 1024, seed=7):
    """A package as the coordinator takes it (fixtures/src/lib.rs package_tar):
    `up.sh` (mode 755) at the root and a payload, fixed metadata."""
    up_sh = (f"#!/bin/sh\n# browser-test package {name} {version}\nset -eu\n"
             "root=\"${TILLSWARM_ROOT:-/home/ukm5/mint}\"\n"
             f"echo \"installing {name} {version} into $root/app\"\nmkdir -p \"$root/app\"\n"
             "cp payload.bin \"$root/app/payload.bin\"\n"
             f"echo \"{version}\" > \"$root/app/VERSION\"\necho \"{name} {version} installed\"\n").encode()
    payload = random.Random(seed).randbytes(payload_size)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for member, data, mode in (("up.sh", up_sh, 0o755), ("payload.bin", payload, 0o644)):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    """Paths of the packages the tests upload: our own shopapp 1.2.0 and 1.3.0
    and the fixtures' demo-broken 1.0.1 (whose up.sh fails)."""
    wait_for_binary()
    out = tmp_path_factory.mktemp("packages")
    subprocess.run([str(BINARY), "fixtures", "generate", "--out", str(out / "fixtures")],
                   check=True, capture_output=True, timeout=120)
    for f in (out / "fixtures").iterdir():  # 200 MB of packages; pytest keeps its last 3 runs' folders
        if f.name != "demo-broken-1.0.1.tar":
            f.unlink()
    return {"shopapp": build_package(out / "shopapp-1.2.0.tar", "shopapp", "1.2.0"),
            "shopapp-next": build_package(out / "shopapp-1.3.0.tar", "shopapp", "1.3.0", seed=8),
            "broken": out / "fixtures" / "demo-broken-1.0.1.tar"}


# ---------------------------------------------------------------- catalogues

class Catalogue:
    """One language's texts, looked up by key as the panel's t() does."""

    def __init__(self, lang, texts):
        self.lang, self.texts = lang, texts

    def plural(self, n):
        if self.lang == "ru":
            if n % 10 == 1 and n % 100 != 11:
                return "one"
            return "few" if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else "many"
        return "one" if n == 1 else "other"

    def t(self, key, **params):
        v = self.texts[key]
        if isinstance(v, dict):
            v = v.get(self.plural(int(params["n"])), v.get("other"))
        return re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), m.group(0))), v)

    def forms(self, key):
        v = self.texts[key]
        return list(v.values()) if isinstance(v, dict) else [v]


@pytest.fixture(scope="session")
def catalogues():
    out = {}
    for lang in ("en", "ru"):
        script = f'const m = await import({json.dumps(str(CATALOGUES / (lang + ".js")))}); console.log(JSON.stringify(m.default))'
        res = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True,
                             timeout=30, check=True)
        out[lang] = Catalogue(lang, json.loads(res.stdout))
    return out


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,800", "--lang=en-US",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


# JS: the visible texts under some roots (text nodes and placeholders), each
# with its element's tag and nearest data-test.
VISIBLE_TEXTS_JS = r"""
const out = [];
const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
for (const root of arguments[0].map((s) => document.querySelector(s)).filter(Boolean)) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const s = n.textContent.replace(/\s+/g, " ").trim();
    const el = n.parentElement;
    if (!s || !el || el.closest("script, style, datalist")) continue;
    const box = el.tagName === "OPTION" ? el.closest("select") : el;
    if (!box || !visible(box)) continue;
    const hook = el.closest("[data-test]");
    out.push([s, el.tagName.toLowerCase(), hook ? hook.dataset.test : ""]);
  }
  for (const el of root.querySelectorAll("input[placeholder], textarea[placeholder]")) {
    if (visible(el) && el.placeholder.trim()) out.push([el.placeholder.trim(), "placeholder", ""]);
  }
}
return out;
"""

# JS: every string in the JSON answers of some API paths (data, not panel text).
API_STRINGS_JS = r"""
const [paths, done] = [arguments[0], arguments[arguments.length - 1]];
const out = new Set();
const walk = (v) => { if (typeof v === "string") out.add(v.trim()); else if (v && typeof v === "object") Object.values(v).forEach(walk); };
Promise.all(paths.map((p) => fetch(p, { headers: { Accept: "application/json" }, cache: "no-store" })
  .then((r) => r.ok ? r.json() : null).then(walk, () => null)))
  .then(() => done([...out]));
"""

API_GET_JS = r"""
const [path, done] = [arguments[0], arguments[arguments.length - 1]];
fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" })
  .then((r) => r.text().then((t) => done({ status: r.status, body: t })), (e) => done({ status: 0, body: String(e) }));
"""

# JS: whether the view mounted after go() has finished its first refresh
# (views fill #updated after a refresh; the old view's nodes carry __old).
VIEW_LOADED_JS = r"""
const kids = [...document.getElementById("view").children];
if (!kids.length || kids.some((c) => c.__old)) return false;
const u = document.querySelector("#view #updated");
return !!u && u.textContent.trim() !== "";
"""


class Panel:
    """The logged-in panel in the browser, with the helpers the tests use."""

    def __init__(self, driver, demo, catalogues):
        self.d, self.demo, self.cat = driver, demo, catalogues
        self.logs = []  # (test name, console entry) over the whole run
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob("fail-*.png"):  # from an earlier run
            old.unlink()

    # ---- texts
    @property
    def lang(self):
        return self.d.execute_script("return document.documentElement.lang") or "en"

    def t(self, key, **params):
        return self.cat[self.lang].t(key, **params)

    # ---- waits and elements
    def wait(self, cond, timeout=WAIT, msg=""):
        assert timeout <= LONG
        return WebDriverWait(self.d, timeout, poll_frequency=0.2).until(lambda _: cond(), msg)

    def find(self, css, root=None):
        return (root or self.d).find_element(By.CSS_SELECTOR, css)

    def finds(self, css, root=None):
        return (root or self.d).find_elements(By.CSS_SELECTOR, css)

    def visible(self, css, timeout=WAIT):
        return WebDriverWait(self.d, timeout).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)),
                                                     f"{css} not visible")

    def click(self, target, timeout=WAIT):
        el = target if not isinstance(target, str) else WebDriverWait(self.d, timeout).until(
            EC.element_to_be_clickable((By.CSS_SELECTOR, target)), f"{target} not clickable")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        try:
            el.click()
        except ElementClickInterceptedException:  # a toast over it: click it as a user reaching it would;
            # later, so a confirmation it opens does not interrupt this script
            self.d.execute_script("const el = arguments[0]; setTimeout(() => el.click(), 0)", el)
        return el

    def by_text(self, css, text, root=None):
        """The visible elements matching css whose text is exactly `text`."""
        return [e for e in self.finds(css, root) if e.is_displayed() and e.text.strip() == text]

    def label_input(self, root, label_key, css="input"):
        """The control inside the <label> whose text starts with the catalogue text of label_key."""
        text = self.t(label_key)
        for lab in self.finds("label", root):
            if lab.text.strip().startswith(text):
                return self.find(css, lab)
        raise AssertionError(f"no label {text!r}")

    def select(self, el, value, timeout=WAIT):
        self.wait(lambda: any(o.get_attribute("value") == str(value) for o in Select(el).options), timeout,
                  f"option {value} never appeared")
        Select(el).select_by_value(str(value))

    def accept_confirm(self, expect=(), timeout=WAIT):
        """Accepts the confirmation the page asks, and returns its text; when
        it does not hold every text of `expect`, dismisses it and fails."""
        alert = WebDriverWait(self.d, timeout).until(EC.alert_is_present(), "no confirmation asked")
        text = alert.text
        wrong = [x for x in ([expect] if isinstance(expect, str) else expect) if x not in text]
        if wrong:
            alert.dismiss()
            raise AssertionError(f"the confirmation does not mention {wrong}; it asked (dismissed): {text!r}")
        alert.accept()
        return text

    def shot(self, name):
        self.d.save_screenshot(str(SHOTS / f"{name}.png"))

    # ---- navigation
    def go(self, route, timeout=WAIT):
        self.d.execute_script("""
          for (const c of document.getElementById("view").children) c.__old = true;
          if (location.hash === "#" + arguments[0]) window.dispatchEvent(new HashChangeEvent("hashchange"));
          else location.hash = arguments[0];""", route)
        self.wait_loaded(timeout, route)

    def wait_loaded(self, timeout=WAIT, what="view"):
        self.wait(lambda: self.d.execute_script(VIEW_LOADED_JS), timeout, f"{what} did not load")

    def live_text(self):
        return self.find("[data-test=conn-state]").text.strip()

    def wait_live(self, timeout=WAIT):
        self.wait(lambda: self.live_text() == self.t("live.live"), timeout, "the live stream never came up")

    # ---- data
    def api(self, path):
        r = self.d.execute_async_script(API_GET_JS, path)
        assert r["status"] == 200, f"GET {path}: {r}"
        return json.loads(r["body"])

    def api_strings(self, paths):
        return set(self.d.execute_async_script(API_STRINGS_JS, paths))

    def visible_texts(self, roots=("nav", "#view")):
        return self.d.execute_script(VISIBLE_TEXTS_JS, list(roots))

    def english_leaks(self, data):
        """Visible texts that are English catalogue texts (differing from the
        Russian ones), API data and Russian catalogue texts left out."""
        en, ru = self.cat["en"], self.cat["ru"]
        ru_texts = {f for k in ru.texts for f in ru.forms(k)}
        exact, patterns = set(), []
        for k in en.texts:
            if k in ru.texts and en.forms(k) == ru.forms(k):
                continue
            for f in en.forms(k):
                if "{" not in f:
                    exact.add(f)
                elif len(re.findall(r"[A-Za-z]", re.sub(r"\{\w+\}", "", f))) >= 3:
                    patterns.append(re.compile(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(f)), re.S))
        leaks = []
        for text, tag, hook in self.visible_texts():
            if text in data or text in ru_texts:
                continue
            if text in exact or any(p.fullmatch(text) for p in patterns):
                leaks.append((text, tag, hook))
        return leaks

    # ---- flows
    def login(self, user, password):
        self.visible("#login-user").clear()
        self.find("#login-user").send_keys(user)
        self.find("#login-password").clear()
        self.find("#login-password").send_keys(password)
        self.click("#login-submit")

    def upload(self, path):
        """Uploads a package through the Packages view's form; returns the package row."""
        self.go("packages")
        form = self.find("[data-test=package-upload-form]")
        self.find("input[type=file]", form).send_keys(str(path))
        m = re.match(r"(.+?)-(\d+(?:\.\d+)*)\.tar$", Path(path).name)
        name_in, version_in = self.finds("input[type=text]", form)[:2]
        # The form suggests name and version from the file name.
        self.wait(lambda: name_in.get_property("value") == m.group(1) and version_in.get_property("value") == m.group(2),
                  msg="name and version not taken from the file name")
        self.click("[data-test=package-upload]")
        return self.wait(lambda: self.row("[data-test=packages-rows] tr[data-test=package-row]", m.group(1), m.group(2)),
                         30, f"{path} not listed after the upload")

    def row(self, css, *texts):
        """The first row matching css whose cells hold all texts (each a whole cell's text or a word in it)."""
        for r in self.finds(css):
            try:
                words = set(r.text.split()) | {c.text.strip() for c in self.finds("td", r)}
            except StaleElementReferenceException:
                return None
            if all(x in words for x in texts):
                return r
        return None


@pytest.fixture(scope="session")
def panel(driver, demo, catalogues):
    return Panel(driver, demo, catalogues)


@pytest.fixture(scope="session")
def state():
    """What one test made and a later one uses (ids, names)."""
    return {}


@pytest.fixture(autouse=True)
def _console(request, panel):
    """Collects the browser's console entries after each test, with the test's name."""
    yield
    try:
        for entry in panel.d.get_log("browser"):
            panel.logs.append((request.node.name, entry))
    except Exception as e:  # the browser is gone: the test itself has failed already
        print(f"console log not read: {e}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test leaves a screenshot of the page: target/screenshots/fail-<test>.png."""
    outcome = yield
    rep = outcome.get_result()
    p = item.funcargs.get("panel") if hasattr(item, "funcargs") else None
    if rep.when == "call" and rep.failed and p is not None:
        try:
            p.shot(f"fail-{item.name}")
        except Exception as e:
            print(f"no failure screenshot: {e}")
