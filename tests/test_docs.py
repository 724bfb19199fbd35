"""The walkthrough pastes real output: every block equals a fresh run."""

import importlib.util
import os
import re

from sim.costs import Costs

from tests.conftest import ROOT


def test_walkthrough_output_blocks_are_current(capsys):
    spec = importlib.util.spec_from_file_location("refresh", os.path.join(ROOT, "docs", "refresh.py"))
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    text = open(refresh.DOC).read()
    assert set(refresh.blocks(text)) == set(refresh.COMMANDS)
    code = refresh.refresh(check=True)
    assert code == 0, capsys.readouterr().out + "\nrun: python docs/refresh.py"


# -- every number the walkthrough's prose quotes -------------------------------

def _load_refresh():
    spec = importlib.util.spec_from_file_location("refresh", os.path.join(ROOT, "docs", "refresh.py"))
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    return refresh


def _line(block: str, label: str) -> str:
    return next(ln for ln in block.splitlines() if ln.startswith(label))


def _phase(block: str, name: str) -> tuple[float, float]:
    """(seconds, percent) of a row of the time-by-phase table."""
    m = re.search(rf"^\s+{re.escape(name)}\s+([\d.]+) s\s+([\d.]+) %$", block, re.M)
    return float(m.group(1)), float(m.group(2))


def _t(block: str, fragment: str) -> float:
    """Simulated time of the first causal-chain step containing fragment."""
    return float(next(ln for ln in block.splitlines() if fragment in ln and " s  " in ln).split()[0])


def _timeout_s(b) -> str:
    return str(int(re.search(r"after (\d+) ms: timeout", b["explain"]).group(1)) // 1000)


def _sim_s(block: str) -> float:
    return float(_line(block, "simulated time:").split()[2])


def _boot_start(block: str) -> float:
    return _phase(block, "slof start-up")[0] + _phase(block, "pci probe")[0]


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")

# (regex in the prose, what its groups must read, from the shown output).
PROSE_CLAIMS = [
    (r'a boot that "takes" (\d+) seconds', lambda b: [str(int(_sim_s(b["run-stall"])))]),
    (r"Its exit status is (\d) because the boot failed",
     lambda b: [str(1 if "outcome:             stalled" in b["run-stall"] else 0)]),
    (r"SLOF waits\s+(\d+) seconds for the disk to\s+answer", lambda b: [_timeout_s(b)]),
    (r"costs (\d+) seconds per read", lambda b: [_timeout_s(b)]),
    (r"waits (\d+) seconds for the device's", lambda b: [_timeout_s(b)]),
    (r"every (\d+)\s+seconds: a kick", lambda b: [_timeout_s(b)]),
    (r"the (\d+)-second timeout", lambda b: [_timeout_s(b)]),
    (r"reports status (\d+)", lambda b: [re.search(r"status = (\d+)", b["run-stall"]).group(1)]),
    (r"its first read \(sector (\d+), the ISO9660 probe\)",
     lambda b: [re.search(r"request #1: read sector (\d+)", b["explain"]).group(1)]),
    (r"visible to the device \(`avail->idx := (\d+)`\)",
     lambda b: [re.search(r"request #1: .*avail->idx := (\d+)", b["explain"]).group(1)]),
    (r"they decide the race that loses request #(\d+)",
     lambda b: [re.search(r"kick dropped, request #(\d+) lost", b["explain"]).group(1)]),
    (r"of the value (\d+), (\d+) bytes wide",
     lambda b: list(reversed(re.search(r"STORE size (\d+) addr \w+ val 0x(\d+)", b["explain"]).groups()))),
    (r"notify handler for queue (\d+)",
     lambda b: [re.search(r"virtio_queue_notify\(vq (\d+)\)", b["explain"]).group(1)]),
    (r"same address, (\d+) bytes, value (\d+)",
     lambda b: list(re.search(r"taken by ioeventfd at \w+ len (\d+) datamatch 0x(\d+)",
                              b["run-fixed-tail"]).groups())),
    (r"\(the stall, (\d+) to (\d+) s\)", lambda b: ["0", str(int(_sim_s(b["run-stall"])))]),
    (r"\(the fix, (\d+) to ([\d.]+) s\)", lambda b: ["0", f"{_sim_s(b['run-fixed-tail']):.2f}"]),
    (r"milliseconds at about ([\d.]+) s", lambda b: [f"{_boot_start(b['run-fixed-tail']):.2f}"]),
    (r"The IOThread wakes (\d+) µs after the kick",
     lambda b: [str(round(1e6 * (_t(b["run-fixed-tail"], "readable: handler runs")
                                 - _t(b["run-fixed-tail"], "H_LOGICAL_CI_STORE"))))]),
    (r"the fixed boot's ([\d.]+) s go", lambda b: [f"{_sim_s(b['run-fixed-tail']):.2f}"]),
    (r"(\d+) % \(([\d.]+) s\)\s+to SLOF's own start-up",
     lambda b: [f"{_phase(b['run-fixed-tail'], 'slof start-up')[1]:.0f}",
                f"{_phase(b['run-fixed-tail'], 'slof start-up')[0]:.2f}"]),
    (r"(\d+) % \(([\d.]+) s\) to the kernel stage",
     lambda b: [f"{_phase(b['run-fixed-tail'], 'kernel virtio-blk')[1]:.0f}",
                f"{_phase(b['run-fixed-tail'], 'kernel virtio-blk')[0]:.2f}"]),
    (r"and ([\d.]+) %\s+\((\d+) ms\) to SLOF's whole disk part",
     lambda b: [f"{_phase(b['run-fixed-tail'], 'boot')[1]:.1f}",
                f"{1000 * _phase(b['run-fixed-tail'], 'boot')[0]:.0f}"]),
    (r"and makes (\w+) read", lambda b: [NUMBER_WORDS[int(re.search(r"done \(Linux [\d.]+\): (\d+) reads?",
                                                                   b["run-fixed-tail"]).group(1))]]),
    (r"Almost all of its ([\d.]+) s", lambda b: [f"{_phase(b['run-fixed-tail'], 'kernel virtio-blk')[0]:.2f}"]),
    (r"`sim/costs.py`, ([\d.]+) s, marked ASSUMPTION", lambda b: [f"{Costs().linux_boot_to_probe:g}"]),
]
# Numbers in the prose that quote no output: versions, years, the
# capability's number, list numbering.
PROSE_FACTS = [r"\b2015\b", r"64 KiB page-cache page", r"SLOF \d{8}\b", r"Linux\s+\d\.\d", r"QEMU \d\.\d(?: to \d\.\d)?", r"a 4\.1 kernel", r"capability 104",
               r"\*\*ENABLE_CAP\(104\)\*\*", r"^\d+\. "]


def _prose(text: str) -> tuple[str, str]:
    """The walkthrough without its fenced blocks (same length), and the same
    with inline code masked."""
    # fences stand at the start of a line (2015 SLOF's logo has runs of backticks)
    prose = re.sub(r"^```.*?^```[^\n]*$", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S | re.M)
    return prose, re.sub(r"`[^`]*`", lambda m: "`" + "#" * (len(m.group(0)) - 2) + "`", prose)


def test_walkthrough_prose_quotes_its_output_truly():
    refresh = _load_refresh()
    text = open(refresh.DOC).read()
    b = refresh.blocks(text)
    prose, masked = _prose(text)
    covered = set()
    for pattern, want in PROSE_CLAIMS:
        m = re.search(pattern, prose)
        assert m, f"the walkthrough no longer says {pattern!r}: update PROSE_CLAIMS"
        assert list(m.groups()) == want(b), f"{m.group(0)!r}: its output reads {want(b)}"
        covered |= {i for g in range(1, len(m.groups()) + 1) for i in range(*m.span(g))}
    for pattern in PROSE_FACTS:
        covered |= {i for m in re.finditer(pattern, masked, re.M) for i in range(*m.span())}
    loose = [f"line {masked.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r} in "
             f"{masked[max(0, m.start() - 40):m.end() + 20]!r}"
             for m in re.finditer(r"(?<![\w.#])\d+(?:\.\d+)*(?![\w.]?\w)", masked) if m.start() not in covered]
    assert loose == [], "numbers in the prose that no claim checks (add to PROSE_CLAIMS or PROSE_FACTS)"
    # Inline code that quotes output quotes it verbatim (spacing aside).
    shown = " ".join(" ".join(v.split()) for v in b.values())
    for m in re.finditer(r"`([^`]*)`", prose):
        code = " ".join(m.group(1).split())
        quotes_output = re.search(r"\d", code) and not code.startswith(("slofsim ", "--"))
        assert not quotes_output or code in shown, f"`{code}` is not in any output shown"


# -- the README documents the whole command line ------------------------------

def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_readme_quick_start_is_the_two_commands():
    assert "```\npip install . && slofsim demo\npip install '.[test]' && pytest\n```" in _readme()


def test_readme_documents_every_command_option_key_and_exit_status():
    from sim.cli import COMMANDS, build_parser
    from sim.scenario import EXPECT_KEYS, SCHEMA
    text = _readme()
    _, subs = build_parser()
    for name in COMMANDS:
        assert f"`slofsim {name}" in text, f"slofsim {name} is not in the README"
        for act in subs[name]._actions:
            for opt in act.option_strings:
                assert opt in ("-h", "--help") or f"{opt}" in text, f"slofsim {name} {opt} is not in the README"
    assert "`slofsim --version`" in text
    for table, keys in SCHEMA.items():
        if table:
            assert f"`[{table}]`" in text
        for key, kind in keys.items():
            if not table and kind is dict:
                continue            # a table, checked as `[table]`
            if table == "expect" and key.startswith("kernel_"):
                assert "`kernel_*`" in text
            else:
                assert f"`{key}`" in text, f"[{table}] {key} is not in the README"
    assert set(EXPECT_KEYS) <= set(SCHEMA["expect"])
    table = text[text.index("### Exit statuses"):]
    for status in (0, 1, 2, 130, 141):
        assert f"\n| {status} |" in table


def test_readme_paths_exist():
    for path in set(re.findall(r"`((?:tests|sim|docs|scenarios|benchmarks)/[\w./-]+)`", _readme())):
        assert os.path.exists(os.path.join(ROOT, path)), path
