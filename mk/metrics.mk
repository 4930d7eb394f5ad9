# Monitoring (issue #21): /metrics pages through promtool, the dashboard's metric names, the
# Prometheus scrape example. The pages come from the real report types (a lib test writes
# them) and from the built binary's health port over HTTP; no VM, no root.

METRICS_PAGES := $(BUILD)/metrics

.PHONY: metrics-test
## metrics-test  promtool check metrics on every /metrics page the tests render (SuperLink, SuperNode, failed, a live `supervise`), the dashboard's metrics exist, promtool check config on the scrape example, a real Prometheus scraping (the live page; the e2e's steps against stand-ins)
metrics-test: setup
	rm -rf $(METRICS_PAGES) && mkdir -p $(METRICS_PAGES)
	FI_METRICS_PAGES=$(abspath $(METRICS_PAGES)) cargo test --locked --lib appliance::report::tests::write_metrics_pages -- --ignored --exact
	cargo build --locked
	$(PYTHON) tests/metrics/check.py --pages $(METRICS_PAGES) --binary target/debug/flower-init \
		--dashboard monitoring/grafana-dashboard.json --prometheus-config monitoring/prometheus.yml
	$(PYTHON) tests/e2e/test_prom.py
TEST_TARGETS += metrics-test

.PHONY: report-test
## report-test  the HTML report (tools/report.py) of a recorded run opens in headless Chromium with its charts (boot timelines, loss/accuracy per round); make demo/e2e write build/{demo,e2e}/report.html
report-test: setup
	$(PYTHON) tools/test_report.py
TEST_TARGETS += report-test
