# OneGate and OneFlow (issue #4): the stand-in's own tests, then the client, publisher and
# discovery against it, including the tests that wait on purpose (OneGate down, slow, broken).

.PHONY: onegate-test oneflow-templates

## onegate-test     OneGate stand-in tests (python3), then client/publisher/discovery against it incl. down/slow/500/garbage, against OpenNebula 7.0 and 7.2 answers
onegate-test: setup
	$(PYTHON) -m unittest tools/test_onegate_standin.py
	for v in 7.0 7.2; do echo "== OneGate tests against onegate-server.rb $$v"; \
	  ONEGATE_STANDIN_OPENNEBULA=$$v cargo test --locked --test onegate -- --include-ignored || exit 1; done
TEST_TARGETS += onegate-test

## oneflow-templates rewrite oneflow/flower-7.json and flower-6.json from src/vars.rs (review the diff!)
oneflow-templates:
	FI_BLESS=1 cargo test --locked --lib oneflow::tests::committed_templates_are_the_generated_ones -- --exact
