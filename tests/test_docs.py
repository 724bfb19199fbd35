"""The walkthrough pastes real output: every block equals a fresh run."""

import importlib.util
import os

from tests.conftest import ROOT


def test_walkthrough_output_blocks_are_current(capsys):
    spec = importlib.util.spec_from_file_location("refresh", os.path.join(ROOT, "docs", "refresh.py"))
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    text = open(refresh.DOC).read()
    assert set(refresh.blocks(text)) == set(refresh.COMMANDS)
    code = refresh.refresh(check=True)
    assert code == 0, capsys.readouterr().out + "\nrun: python docs/refresh.py"
