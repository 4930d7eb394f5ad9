# Hand-written context for a SuperNode at a remote site (no OneFlow, no OneGate):
# double quotes, bare values and comments are accepted as sh would read them.
FL_ROLE=supernode
FL_SUPERLINK_ADDRESS="[2001:db8:10::5]:8000"     # the SuperLink's public address
FL_NODE_CONFIG='partition-id=2 num-partitions=4 site="lab b"'
FL_TLS_ENABLED=YES
FL_SSL_CA_CERTFILE=ca.pem                        # a FILES_DS image named ca.pem
FL_GPU_ENABLED=YES
FL_CUDA_VISIBLE_DEVICES=0
FL_GPU_MEMORY_FRACTION=0.8

NETWORK=YES
ETH0_MAC=02:00:c0:a8:01:0a
ETH0_IP=192.168.1.10
ETH0_MASK=255.255.255.0
ETH0_GATEWAY=192.168.1.1
ETH0_IP6=2001:db8:10::a
ETH0_ROUTES="10.0.0.0/8 via 192.168.1.254"
DNS="192.168.1.1 2001:db8:10::1"
SET_HOSTNAME="supernode lab-b"
