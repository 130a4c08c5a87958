"""Missing shared data fails a test loudly unless skipping is asked for."""

import data_files
import pytest


def test_missing_data_fails_unless_allowed(monkeypatch, tmp_path):
  missing = str(tmp_path / "absent.npz")
  monkeypatch.delenv(data_files.ALLOW_MISSING, raising=False)
  with pytest.raises(pytest.fail.Exception, match="absent.npz is missing"):
    data_files.require(missing)
  monkeypatch.setenv(data_files.ALLOW_MISSING, "1")
  with pytest.raises(pytest.skip.Exception, match="absent.npz is missing"):
    data_files.require(missing)
  assert data_files.require(__file__) == __file__
