# A hand edit gone wrong: check lists every syntax error with its line.
FL_ROLE=superlink
FL_NUM_ROUNDS=5
FL_STRATEGY = FedAvg
fl-log-level=INFO
FL_NUM_ROUNDS=6
FL_CERT_EXTRA_SANS=$PUBLIC_IP
START_SCRIPT='echo "never closed
