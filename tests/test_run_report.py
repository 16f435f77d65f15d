"""`r1kit report`: a real GRPO run and a real SFT run each become one self-contained report.html, opened in
headless Chromium (Debian's `chromium`; .ci/run installs it): every expected curve is an inline PNG that
decodes, a planted hostile completion shows as text and never runs, the step selector opens a step, the
config is a table, nothing points outside the file, and a screenshot is not blank. Without Chromium those
checks skip with the reason; the parts that need no browser still run."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from r1kit.cli import main as cli_main
from r1kit.diagnose.report import (ReportConfig, Series, line_chart_png, moving_mean, pick_completions, run_report,
                                   spread)
from r1kit.train.grpo import train as grpo_train
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.sft import train as sft_train
from r1kit.train.sft_config import SFTConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")

# the curves the issue asks for, by the id of their <figure>
GRPO_PLOTS = {"reward", "accuracy", "length", "clipped_ratio", "zero_std", "entropy", "kl", "learning_rate",
              "tokens_per_sec"}
SFT_PLOTS = {"loss", "mean_token_accuracy", "grad_norm", "learning_rate", "tokens_per_sec"}
# model output that would act if it were not escaped: change the title, mark the body, add an element
PAYLOAD = ("</pre></details><script>document.title='PWNED'</script>"
           "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><b id=\"planted\">bold</b>")


def digit_share(prompts, completions, **columns):
    """A reward the tiny random model's samples differ on, so the curves and the best/worst picks move."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "grpo"
    cfg = GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=16,
                     num_generations=4, per_device_train_batch_size=8, max_completion_length=12,
                     max_prompt_length=256, learning_rate=1e-3, max_steps=3, beta=0.04,
                     reward_funcs=["accuracy", "format", "test_run_report:digit_share"], output_dir=str(out), save_steps=0, disable_tqdm=True, seed=7)
    grpo_train(cfg)
    # plant a hostile completion (scored best, so it is shown), a hostile prompt and a hostile config value
    step2 = out / "completions" / "step-000002.jsonl"
    row = {"row": 0, "prompt": "Q: " + PAYLOAD, "completion": PAYLOAD, "finish_reason": "eos", "length": 9,
           "reward": 99.0, "advantage": 1.5, "rewards/accuracy": 1.0, "rewards/format": None}
    step2.write_text(step2.read_text() + json.dumps(row) + "\n")
    config = json.loads((out / "r1kit_config.json").read_text())
    (out / "r1kit_config.json").write_text(json.dumps({**config, "system_prompt": PAYLOAD}))
    assert cli_main(["report", "--run_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + {i + 3}?", "completion": f"<answer> {2 * i + 3} </answer>"})
                            + "\n" for i in range(16)))
    out = root / "sft"
    sft_train(SFTConfig(model_name_or_path="r1kit:tiny", dataset_name=str(data), template="none", max_length=64,
                        per_device_train_batch_size=4, learning_rate=3e-3, max_steps=4, logging_steps=1,
                        save_steps=0, output_dir=str(out), disable_tqdm=True, seed=3))
    page = root / "pages" / "sft.html"
    assert cli_main(["report", str(out), "--out", str(page)]) == 0  # `r1kit report RUN_DIR`, the bare form
    return out, page


class Dom(HTMLParser):
    """Elements (tag, attrs, classes of the open ancestors) and text by enclosing tag, of a dumped DOM."""

    VOID = {"img", "meta", "br", "hr", "input", "link", "source"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements, self.stack, self.text_in = [], [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs, [a for _, a in self.stack]))
        if tag not in self.VOID:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.text_in.setdefault(self.stack[-1][0], []).append(data)

    def find(self, tag, **want):
        return [(a, up) for t, a, up in self.elements if t == tag and all(a.get(k) == v for k, v in want.items())]

    def text(self, tag) -> str:
        return "".join(self.text_in.get(tag, []))


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def dump_dom(tmp_path, page, fragment="") -> Dom:
    done = chromium(tmp_path, "--dump-dom", page.resolve().as_uri() + fragment)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return Dom(done.stdout)


def plots_in(dom: Dom) -> dict[str, Image.Image]:
    """Figure id -> its image, decoded from the inline base64 PNG."""
    out = {}
    for attrs, _ in dom.find("figure"):
        if "plot" not in attrs.get("class", "").split():
            continue
        imgs = [a for t, a, up in dom.elements if t == "img" and any(u.get("id") == attrs["id"] for u in up)]
        assert len(imgs) == 1, attrs["id"]
        head, _, data = imgs[0]["src"].partition(",")
        assert head == "data:image/png;base64" and data, attrs["id"]
        png = base64.b64decode(data, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        out[attrs["id"].removeprefix("plot-")] = Image.open(io.BytesIO(png))
    return out


def assert_self_contained(html_text: str) -> None:
    dom = Dom(html_text)
    for tag, attrs, _ in dom.elements:
        for name in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value[:80])
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    assert "http://" not in html_text and "https://" not in html_text and "url(" not in html_text


def assert_screenshot_not_blank(tmp_path, page, name) -> Image.Image:
    shot = tmp_path / f"{name}.png"
    done = chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page.resolve().as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, plot lines and fills: not a blank or one-colour page
    white = max(count for count, c in colours if c == (255, 255, 255))
    assert white < 0.97 * image.size[0] * image.size[1]
    return image


# ---- the real runs in a real browser ---------------------------------------------------------------------

@needs_chromium
def test_grpo_report_renders_every_curve_escapes_completions_and_selects_steps(grpo_run, tmp_path):
    page = grpo_run / "report.html"
    assert_self_contained(page.read_text())
    dom = dump_dom(tmp_path, page)
    plots = plots_in(dom)
    assert GRPO_PLOTS <= set(plots), GRPO_PLOTS - set(plots)
    assert all(im.width > 300 and im.height > 150 for im in plots.values())

    # the hostile completion, prompt and config value are text: nothing ran, no element came of them
    assert "PWNED" not in dom.text("title") and "r1kit report" in dom.text("title")
    assert not dom.find("script") and not dom.find("b", id="planted")
    assert not [a for _, a, _ in dom.elements if "onerror" in a or "data-pwned" in a or a.get("src") == "x"]
    assert PAYLOAD in dom.text("pre")  # in the completion's and the prompt's <pre>, exactly as the model wrote it
    assert PAYLOAD in dom.text("code")  # the config table's system_prompt

    # completions: one <details> per logged step, the newest open; the planted row is step 2's best
    steps = [a for a, _ in dom.find("details") if a.get("class") == "step"]
    assert len(steps) == 3 and "open" in steps[0]
    assert "best 1" in dom.text("b") and "reward 99" in "".join(dom.text_in.get("div", []))
    links = [a["href"] for a, _ in dom.find("a") if a.get("href", "").startswith("#step-")]
    assert links == ["#step-1", "#step-2", "#step-3"]
    # the step selector works offline: following a step's link opens that step
    assert "open" not in dom.find("div", id="step-1")[0][1][-1]  # its <details>, closed on loading
    opened = dump_dom(tmp_path, page, "#step-1")
    assert "open" in opened.find("div", id="step-1")[0][1][-1]

    # the config table
    assert dom.find("table", **{"class": "config"})
    assert "learning_rate" in dom.text("td") and "num_generations" in dom.text("td")
    assert_screenshot_not_blank(tmp_path, page, "grpo")


@needs_chromium
def test_sft_report_renders_its_curves(sft_run, tmp_path):
    out, page = sft_run
    assert_self_contained(page.read_text())
    dom = dump_dom(tmp_path, page)
    plots = plots_in(dom)
    assert SFT_PLOTS <= set(plots), SFT_PLOTS - set(plots)
    assert not {"reward", "length", "kl", "zero_std"} & set(plots)  # only the curves of logged metrics
    assert "SFT" in dom.text("b") and "max_length" in dom.text("td")
    assert "No completions logged" in dom.text("p")
    assert_screenshot_not_blank(tmp_path, page, "sft")


# ---- without a browser ------------------------------------------------------------------------------------

def test_report_without_a_browser(grpo_run, sft_run):
    text = (grpo_run / "report.html").read_text()
    assert_self_contained(text)
    assert PAYLOAD not in text and "&lt;script&gt;document.title=" in text  # escaped in the file itself
    for key in GRPO_PLOTS:
        assert f"id='plot-{key}'" in text, key
    sft_text = sft_run[1].read_text()
    for key in SFT_PLOTS:
        assert f"id='plot-{key}'" in sft_text, key


def test_a_folder_of_runs_gets_a_report_per_run_and_a_running_run_its_checkpoint_config(tmp_path):
    for name, step_config in (("a/model", None), ("b/model", {"learning_rate": 0.5, "reward_funcs": ["format"]})):
        run = tmp_path / name
        run.mkdir(parents=True)
        rows = [{"step": s, "reward": s / 10, "rewards/odd$name/mean": 0.1, "learning_rate": 0.5,
                 "entropy": float("nan") if s == 2 else 1.0, "sandbox/isolation_level": "rlimits"} for s in (1, 2, 3)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew')
        if step_config:  # still running: no r1kit_config.json, a checkpoint holds the options
            (run / "checkpoint-2").mkdir()
            (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"step": 2, "config": step_config}))
    assert run_report(ReportConfig(run_dir=str(tmp_path))).count("report.html") == 2
    a = (tmp_path / "a" / "model" / "report.html").read_text()
    b = (tmp_path / "b" / "model" / "report.html").read_text()
    assert "id='plot-reward'" in a and "id='plot-entropy'" in a  # a NaN point is left out, not the curve
    assert "r1kit_config.json is written when a run ends" in a
    assert "checkpoint-2/trainer_state.json" in b and "<td>learning_rate</td>" in b
    assert "rlimits" in a  # a text metric shows its last value in the metrics table
    with pytest.raises(ValueError, match="holds 2 runs"):
        run_report(ReportConfig(run_dir=str(tmp_path), out=str(tmp_path / "one.html")))
    assert cli_main(["report", "--run_dir", str(tmp_path / "a" / "model" / "nothing")]) == 1
    assert cli_main(["report"]) == 2  # which run? named in the error


def test_best_and_worst_completions_and_step_spread():
    rows = [{"reward": r} for r in (0.5, None, 2.0, -1.0, 1.0)]
    picked = pick_completions(rows, 3)
    assert [(tag, r["reward"]) for tag, r in picked] == [("best 1", 2.0), ("best 2", 1.0), ("worst 1", None)]
    assert [t for t, _ in pick_completions(rows[:2], 4)] == ["#1", "#2"]
    assert spread(5, 10) == [0, 1, 2, 3, 4] and spread(101, 3) == [0, 50, 100] and spread(7, 1) == [6]
    assert len(spread(1000, 200)) == 200
    assert moving_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    png = line_chart_png([Series([1, 2], [0.0, 1.0], label="a$b", band=([0, 0], [1, 2]))], "t $x", "y")
    assert png[:4] == b"\x89PNG"

