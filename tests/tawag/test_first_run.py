from core.settings import load
from dashboards.auth import authenticate
from tawag.first_run import ADMIN_NAME, ensure_dashboard_admin


def test_first_start_creates_an_admin_whose_password_works_and_is_not_stored(tmp_path):
    settings = load(environ={}, data_dir=tmp_path)
    password = ensure_dashboard_admin(settings)
    assert password
    stored = settings.dashboard_users_file.read_text()
    assert password not in stored
    assert settings.dashboard_users_file.stat().st_mode & 0o777 == 0o600
    user = authenticate(settings.dashboard_users_file, ADMIN_NAME, password)
    assert user is not None and user.tenant == settings.tenant
    assert authenticate(settings.dashboard_users_file, ADMIN_NAME, password + "x") is None


def test_an_existing_users_file_is_left_alone(tmp_path):
    settings = load(environ={}, data_dir=tmp_path)
    settings.dashboard_users_file.write_text("# mine\n")
    assert ensure_dashboard_admin(settings) is None
    assert settings.dashboard_users_file.read_text() == "# mine\n"
