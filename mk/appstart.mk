# Warm app start (issue #13): the zygote, the shims, the launcher and the task-window hook of
# image/appstart, run against the pinned Flower of the venv. docs/app.md "How apps start".

.PHONY: appstart-test
## appstart-test    the image's warm app start (zygote, shims, launcher, task-window hook) against real flwr 1.42 (pytest, ~2 min)
appstart-test: setup venv
	PYTHONDONTWRITEBYTECODE=1 $(BUILD)/venv/bin/python -m pytest -p no:cacheprovider -q -rA tests/appstart

TEST_TARGETS += appstart-test
