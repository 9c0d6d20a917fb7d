"""The run-time patches: one module, each guarded by the versions it was checked against."""

from __future__ import annotations

import pytest

from wirewise.servers import patches


def test_every_patch_says_why_where_and_for_which_versions() -> None:
    assert {p.library for p in patches.PATCHES} <= {"hypercorn", "uvicorn"}
    for patch in patches.PATCHES:
        assert patch.versions and all(v.endswith(".") for v in patch.versions), patch.name
        assert len(patch.why) > 100 and patch.upstream.startswith("https://"), patch.name
    assert len({p.name for p in patches.PATCHES}) == len(patches.PATCHES)


def test_a_version_it_was_not_checked_against_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    applied: list[str] = []
    fakes = [
        patches.Patch(
            "fake", "hypercorn", ("0.18.",), "x" * 101, "https://x", lambda: applied.append("fake")
        )
    ]
    monkeypatch.setattr(patches, "PATCHES", fakes)
    monkeypatch.setattr(patches, "_APPLIED", set())
    monkeypatch.setattr(patches.metadata, "version", lambda name: "0.19.2")
    assert patches.apply_hypercorn() == []
    assert applied == []
    assert "not applying fake to hypercorn 0.19.2" in capsys.readouterr().err
    monkeypatch.setattr(patches.metadata, "version", lambda name: "0.18.0")
    assert patches.apply_hypercorn() == ["fake"]
    assert patches.apply_hypercorn() == [], "once per process"
    assert applied == ["fake"]
