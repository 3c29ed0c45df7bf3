"""Files users write that discovery reads (``~/.conda/environments.txt``, ``.condarc``) cannot hang it, make it
read without end, or steer a root-run exporter into another file and its log. Real FIFOs, symlinks, hardlinks
and big files, owned by the real ``nobody`` account."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from exporter.discover.condarc import MAX_CONDARC_BYTES, read_conda_dirs
from exporter.discover.roots import MAX_ENVIRONMENTS_TXT_BYTES, environments_txt_prefixes

NOBODY = 65534
SECRET = "/only/root/may/read/this"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")


def home_of_nobody(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".conda").mkdir(parents=True)
    for path in (home, home / ".conda"):
        os.chown(path, NOBODY, NOBODY)
    return home


def within_deadline(seconds: float, call: object) -> list[str]:
    """``call()``'s result, failing the test (not hanging it) if it does not return within ``seconds``."""
    out: list[list[str]] = []
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)  # type: ignore[operator]
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"did not return within {seconds} s"
    return out[0]


def test_a_users_own_file_is_read(tmp_path: Path) -> None:
    home = home_of_nobody(tmp_path)
    txt = home / ".conda" / "environments.txt"
    txt.write_text("/opt/envs/a\n# a comment\n\n/home/x/env b\n")
    os.chown(txt, NOBODY, NOBODY)
    assert environments_txt_prefixes([(str(home), NOBODY)]) == ["/opt/envs/a", "/home/x/env b"]


def test_a_fifo_in_its_place_does_not_hang_discovery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = home_of_nobody(tmp_path)
    fifo = home / ".conda" / "environments.txt"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    with caplog.at_level(logging.WARNING):
        assert within_deadline(10, lambda: environments_txt_prefixes([(str(home), NOBODY)])) == []
    assert "not a regular file" in caplog.text


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_to_a_file_its_user_cannot_read_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           link: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)  # root's; nobody cannot read it
    home = home_of_nobody(tmp_path)
    txt = home / ".conda" / "environments.txt"
    if link == "symlink":
        txt.symlink_to(secret)
        os.chown(txt, NOBODY, NOBODY, follow_symlinks=False)
    else:  # possible where fs.protected_hardlinks is 0: the link is then root's file under nobody's name
        os.link(secret, txt)
    with caplog.at_level(logging.DEBUG):
        assert environments_txt_prefixes([(str(home), NOBODY)]) == []
    assert SECRET not in caplog.text
    assert ("symlink" if link == "symlink" else "belongs to uid 0") in caplog.text


def test_dev_zero_and_a_big_file_are_refused_unread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = home_of_nobody(tmp_path)
    txt = home / ".conda" / "environments.txt"
    with open(txt, "wb") as out:
        out.write(b"/env\n" * (MAX_ENVIRONMENTS_TXT_BYTES // 5 + 1))
    os.chown(txt, NOBODY, NOBODY)
    with caplog.at_level(logging.WARNING):
        assert environments_txt_prefixes([(str(home), NOBODY)]) == []
    assert f"over the {MAX_ENVIRONMENTS_TXT_BYTES}" in caplog.text
    txt.unlink()
    txt.symlink_to("/dev/zero")
    os.chown(txt, NOBODY, NOBODY, follow_symlinks=False)
    assert within_deadline(10, lambda: environments_txt_prefixes([(str(home), NOBODY)])) == []


def test_a_condarc_too_big_is_skipped_and_the_rest_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "conda"
    (root / "condarc.d").mkdir(parents=True)
    (root / ".condarc").write_text("envs_dirs:\n  - /shared/envs\n")
    big = root / "condarc.d" / "big.yml"
    big.write_text("pkgs_dirs:\n  - /never/read\n" + "# padding\n" * (MAX_CONDARC_BYTES // 10 + 1))
    with caplog.at_level(logging.WARNING):
        dirs = read_conda_dirs(str(root), None, {})
    assert dirs.envs_dirs == ("/shared/envs",)
    assert dirs.pkgs_dirs == ()
    assert "big.yml" in caplog.text and f"over the {MAX_CONDARC_BYTES}" in caplog.text
