# Benchmarks (BENCHMARKS.md). Not part of `make test`: numbers, not pass/fail.

.PHONY: baseline bench-boot
## baseline         the comparison VM: Debian 12 + systemd + the same Flower (build/baseline; needs Debian mirrors)
baseline: build/baseline/appliance.img
build/baseline/appliance.img: bench/baseline/build.sh bench/baseline/boot-probe.py python/flwr-version.txt | setup
	bench/baseline/build.sh 6.1.0-56-amd64  # the kernel scripts/fetch-kernel.sh pins

## bench-boot       qemu start -> SuperLink /health, flower-init vs the systemd baseline, interleaved (RUNS=3)
bench-boot: baseline initramfs image kernel
	$(PYTHON) bench/compare.py --runs $${RUNS:-3}

.PHONY: bench-importtime
## bench-importtime Flower's imports inside the image under the VM harness: python -X importtime per process, page cache cold and warm
bench-importtime: image kernel
	$(PYTHON) bench/importtime.py --json build/bench/importtime/importtime.json
