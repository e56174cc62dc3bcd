"""The gunicorn settings serve-prod runs, as gunicorn itself loads them (ualign_web/gunicorn_conf.py)."""

from __future__ import annotations

import gc

from gunicorn.app.base import Application
from gunicorn.config import Config


def _gunicorn_config() -> Config:
    """The settings as `gunicorn --config python:ualign_web.gunicorn_conf` reads them."""
    config = Config()
    module = Application.get_config_from_module_name(None, "ualign_web.gunicorn_conf")
    for name, value in module.items():
        if name in config.settings:
            config.set(name, value)
    return config


def test_the_master_freezes_its_objects_before_a_fork_so_a_worker_never_collects_the_preloaded_app():
    import ualign_web.wsgi  # noqa: F401 - what preload_app loads in the master before forking

    config = _gunicorn_config()
    assert config.preload_app
    assert gc.get_freeze_count() == 0
    gc.collect()  # in a long test session, earlier tests' garbage: not what a master holds
    before = len(gc.get_objects())  # what a full collection walks
    try:
        config.pre_fork(None, None)  # gunicorn calls it in the master before each worker's fork
        frozen, left = gc.get_freeze_count(), len(gc.get_objects())
    finally:
        gc.unfreeze()
    assert frozen > 0.9 * before  # Django, ualign and their imports: out of every collection's way
    assert left < before / 20
