"""Suite-wide: every test (and every app or CLI process a test starts, which inherits the environment) uses a
temporary results store, never the user's ~/.local/share/certexplorer."""
import pytest

from certlib.store import DATA_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def private_data_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp("certexplorer_data")))
        yield
