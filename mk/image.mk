# The appliance image (issue #6): Debian bookworm rootfs + runc + a venv with the pinned Flower,
# the framework variant and the bundled app; packed read-only (squashfs). See docs/image.md.
#   make image [FRAMEWORK=sklearn|pytorch|tensorflow] [APP=apps/appliance] [IMAGE_FORMATS="squashfs erofs"]
# Rebuilds only when an input or an argument changed (stamps); the Debian base is shared by
# the variants and rebuilt only when image/debian-packages.txt changes.

FRAMEWORK     ?= sklearn
APP           ?= apps/appliance
IMAGE_FORMATS ?= squashfs
IMAGE_DIR     := $(OUT)/image/$(FRAMEWORK)
IMAGE_ROOTFS  := $(IMAGE_DIR)/rootfs
IMAGE_ARGS    := $(FRAMEWORK) $(abspath $(APP)) $(IMAGE_FORMATS)
IMAGE_INPUTS  := $(wildcard image/* image/appstart/*) python/flwr-version.txt python/requirements-flwr-deps.txt \
                 python/requirements-$(FRAMEWORK).txt $(wildcard python/requirements-$(FRAMEWORK)-$(ARCH).txt) \
                 $(shell find $(APP) -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

.PHONY: image image-test image-timings FORCE
## image            Debian rootfs + Flower venv + app for FRAMEWORK (sklearn|pytorch|tensorflow) in build/image/FRAMEWORK/{rootfs,image.squashfs} (ARCH=aarch64: build/aarch64/image/…)
image: $(IMAGE_DIR)/.stamp

# Rewritten only when the arguments differ from the last build's, so a new APP or format rebuilds.
$(IMAGE_DIR)/.args: FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = "$(IMAGE_ARGS)" ] || echo "$(IMAGE_ARGS)" > $@

# The GPU image (issue #18): the x86_64 pytorch variant ships the NVIDIA driver, its modules built
# for the pinned kernel by Debian's nvidia-kernel-dkms (image/nvidia-driver.sh, docs/gpu.md).
NVIDIA_DIR   := $(BUILD)/nvidia/driver
IMAGE_NVIDIA := $(if $(and $(filter pytorch,$(FRAMEWORK)),$(filter x86_64,$(ARCH))),$(NVIDIA_DIR)/driver.json)
$(NVIDIA_DIR)/driver.json: image/nvidia-driver.sh $(KERNEL_DIR)/.done | setup
	image/nvidia-driver.sh $$(ls $(KERNEL_DIR)/lib/modules) $(NVIDIA_DIR)

$(IMAGE_DIR)/.stamp: $(IMAGE_INPUTS) $(IMAGE_DIR)/.args $(IMAGE_NVIDIA) | setup
	@test -f $(APP)/pyproject.toml || { echo "make image: APP=$(APP) has no pyproject.toml (the bundled Flower app)"; exit 1; }
	ARCH=$(ARCH) IMAGE_FORMATS="$(IMAGE_FORMATS)" $(if $(IMAGE_NVIDIA),NVIDIA_DRIVER=$(abspath $(NVIDIA_DIR))) \
	    image/build.sh $(FRAMEWORK) $(APP) $(IMAGE_DIR)
	@touch $@

# The host tests run as PID 1 of a new PID and mount namespace (the container inits re-parent
# to it, a stray kill(-1) cannot leave it, its mounts vanish with it), with the test binary
# built outside first. A hung run is ended after IMAGE_TEST_TIMEOUT s: --kill-child takes the
# namespace, containers included, down with it.
IMAGE_TEST_TIMEOUT ?= 1800
# The test binary is picked by its target (name image_runc, kind test): the JSON also lists the
# flower-init binary built for CARGO_BIN_EXE, and that one, run as PID 1 here, would boot.
# The containers' root: the packed squashfs (loop-mounted, as a VM has it); IMAGE_FROM_DIR=1:
# the unpacked rootfs directory instead.
IMAGE_FROM_DIR ?=
IMAGE_TEST_RUN = bin=$$(cargo test --locked --test image_runc --no-run --message-format=json 2>/dev/null \
	    | python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "image_runc" and "test" in m["target"]["kind"] and m.get("executable")]' | tail -1); \
	test -x "$$bin" || { echo "image-test: cannot find the image_runc test binary"; exit 1; }; \
	FI_IMAGE_ROOTFS="$(abspath $(IMAGE_ROOTFS))" FI_IMAGE_SQUASHFS="$(if $(IMAGE_FROM_DIR),,$(abspath $(IMAGE_DIR)/image.squashfs))" timeout $(IMAGE_TEST_TIMEOUT) unshare --pid --fork --kill-child --mount-proc "$$bin" --ignored --nocapture --test-threads=1

## image-test       real runc + the built rootfs (PID namespace, fi-im-* netns): TLS SuperLink and SuperNode register; kill, stop, clean-up
image-test: image
	cargo test --locked --test image_runc --no-run
	@$(IMAGE_TEST_RUN) --skip timings

## image-timings    runc create/start and runc start -> https /health, FI_TIMING_RUNS times (default 5), medians
image-timings: image
	cargo test --locked --test image_runc --no-run
	@FI_TIMING_RUNS=$${FI_TIMING_RUNS:-5} $(IMAGE_TEST_RUN) timings

TEST_TARGETS += image-test
