# The appliance image (issue #6): Debian bookworm rootfs + runc + a venv with the pinned Flower,
# the framework variant and the bundled app; packed read-only (squashfs). See docs/image.md.
#   make image [FRAMEWORK=sklearn|pytorch|tensorflow] [APP=apps/appliance] [IMAGE_FORMATS="squashfs erofs"]
# Rebuilds only when an input changed (stamp); the Debian base is shared by the variants.

FRAMEWORK     ?= sklearn
APP           ?= apps/appliance
IMAGE_FORMATS ?= squashfs
IMAGE_DIR     := $(BUILD)/image/$(FRAMEWORK)
IMAGE_ROOTFS  := $(IMAGE_DIR)/rootfs
IMAGE_INPUTS  := $(wildcard image/*) python/flwr-version.txt python/requirements-flwr-deps.txt \
                 python/requirements-$(FRAMEWORK).txt \
                 $(shell find $(APP) -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

.PHONY: image image-test
## image            Debian rootfs + Flower venv + app for FRAMEWORK (sklearn), packed as build/image/FRAMEWORK/image.squashfs
image: $(IMAGE_DIR)/.stamp
$(IMAGE_DIR)/.stamp: $(IMAGE_INPUTS) | setup
	@test -f $(APP)/pyproject.toml || { echo "make image: APP=$(APP) has no pyproject.toml (the bundled Flower app)"; exit 1; }
	IMAGE_FORMATS="$(IMAGE_FORMATS)" image/build.sh $(FRAMEWORK) $(APP) $(IMAGE_DIR)
	@echo "$(FRAMEWORK) $(APP) $(IMAGE_FORMATS)" > $@

## image-test       real runc + the built rootfs: SuperLink (TLS) and SuperNode containers register, kill, stop, clean-up
image-test: image
	FI_IMAGE_ROOTFS="$(abspath $(IMAGE_ROOTFS))" cargo test --locked --test image_runc -- --ignored --nocapture --test-threads=1

TEST_TARGETS += image-test
