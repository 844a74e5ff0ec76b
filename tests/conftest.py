"""Suite-wide: every test (and every app or CLI process a test starts, which inherits the environment) uses a
temporary results store, never the user's ~/.local/share/certexplorer."""
from pathlib import Path

import pytest

from certlib.runs.store import DATA_DIR_ENV

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="session", autouse=True)
def private_data_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp("certexplorer_data")))
        yield


@pytest.fixture
def open_page(monkeypatch):
    """open_page(page, module, sampler_name, record, **session_state) -> (AppTest, calls): a fresh app (caches
    cleared) switched to `page`, with every call of `module.sampler_name` recorded as record(*args, **kwargs), so a
    test can assert which controls resample."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def opener(page: str, module, sampler_name: str, record, **session_state):
        st.cache_resource.clear()
        st.cache_data.clear()
        calls, real = [], getattr(module, sampler_name)

        def counting(*args, **kwargs):
            calls.append(record(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, sampler_name, counting)
        at = AppTest.from_file(APP, default_timeout=300)
        for key, value in session_state.items():
            at.session_state[key] = value
        at.run()
        at.switch_page(page).run()
        assert not at.exception, at.exception
        return at, calls

    return opener
