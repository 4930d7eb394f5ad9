# Joining done wrong, every problem at once: FL_JOIN together with FL_SUPERLINK_ADDRESS and
# FL_SSL_CA_CERTFILE (FL_JOIN carries both), and a join value with TLS off for a SuperLink that
# is not on this VM's network (plain text across sites, without FL_ALLOW_PLAINTEXT_WAN=YES).
FL_ROLE='supernode'
FL_JOIN='flwr1:eyJlbmRwb2ludHMiOlsiMjAzLjAuMTEzLjc6ODAwMCJdLCJ0bHMiOmZhbHNlfQ'
FL_SUPERLINK_ADDRESS='203.0.113.7:8000'
FL_SSL_CA_CERTFILE='ca.pem'
FL_NODE_CONFIG='partition-id=0 num-partitions=2'
NETWORK='YES'
ETH0_MAC='02:00:c0:a8:02:0c'
ETH0_IP='192.168.2.12'
ETH0_MASK='255.255.255.0'
