# OneFlow service templates (issue #13): the committed files instantiated the way OpenNebula 6.x
# and 7.x do it (src/oneflow/opennebula.rs models their code), the operator commands. `make unit`
# (and so `make test`) runs the same tests; this target runs only them. `make oneflow-templates`
# (mk/onegate.mk) rewrites the files.

.PHONY: oneflow-test

## oneflow-test    the OneFlow templates through OpenNebula's CLI, oneflow-server and oned merge (6.x, 7.x); --values, --vm-context
oneflow-test:
	cargo test --locked --lib oneflow::
	cargo test --locked --test oneflow
