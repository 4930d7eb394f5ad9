# A SuperNode at another site that reaches its SuperLink only through a WireGuard overlay
# (docs/multisite.md): wg0 10.99.0.2/24 before Flower starts, the SuperLink (the hub) as its one
# peer at its public address, keepalive for the NAT in front of this site. FL_JOIN is the
# SuperLink's join value re-pointed at its tunnel address:
#   flower-init join --endpoint 10.99.0.1:8000 VALUE
# TLS stays on inside the tunnel. FL_WG_PRIVATE_KEY is unset: the key is made at first boot and
# kept on the state disk; its public half is in /status (wireguard.public_key) for the hub.
FL_ROLE='supernode'
FL_JOIN='flwr1:eyJlbmRwb2ludHMiOlsiMTAuOTkuMC4xOjgwMDAiXSwidGxzIjp0cnVlLCJjYSI6WyJNSUlCbnpDQ0FVV2dBd0lCQWdJVUdoQThaL0xjNmlOSlhYcjYwQldqMTJ3MGZUSXdDZ1lJS29aSXpqMEVBd0l3SERFYU1CZ0dBMVVFQXd3UlJYaGhiWEJzWlNCR2JHOTNaWElnUTBFd0lCY05Nall4TVRJeU1URXlNelF5V2hnUE1qRXlOakV3TWpreE1USXpOREphTUJ3eEdqQVlCZ05WQkFNTUVVVjRZVzF3YkdVZ1JteHZkMlZ5SUVOQk1Ga3dFd1lIS29aSXpqMENBUVlJS29aSXpqMERBUWNEUWdBRS84YlNCSzVob2ZrenRPSEE5NXl0b1czakVPUzFJQUlnYVdhWGtFTjYweThqQmpFUGc0bVJLRGtWWmtEOGVwU2dqNm5WdUxzVHBucGtyNUZLWXYvekhLTmpNR0V3SFFZRFZSME9CQllFRkxJLzhHZFRhRitHR3dWQkgveXVzRzJ1TTBXM01COEdBMVVkSXdRWU1CYUFGTEkvOEdkVGFGK0dHd1ZCSC95dXNHMnVNMFczTUE4R0ExVWRFd0VCL3dRRk1BTUJBZjh3RGdZRFZSMFBBUUgvQkFRREFnRUdNQW9HQ0NxR1NNNDlCQU1DQTBnQU1FVUNJRlZVZm00YVRpdGdyWUkwZTBzRDhNc2JxRmZvSDlGUlBNMmhEcXFyWVB6d0FpRUFrTzhSQmp1aUljZjFpK2thRFBFb3MvV2wzY1R0dWJpc3JuYk1oMy9mMWxrPSJdLCJjYV9zaGEyNTYiOlsiZDM0MzFjNjU0NjUzNGFkMTY1Mjk3OTZhNjc0MTQyNmE0NDYxYjFmODlkYTZjZWM4ZGFjM2Y0OWY1NTVkN2E1NyJdfQ'
FL_NODE_CONFIG='partition-id=1 num-partitions=2'
FL_WG_ADDRESS='10.99.0.2/24'
FL_WG_PEERS='hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= allowed=10.99.0.0/24 endpoint=203.0.113.7:51820 keepalive=25'
NETWORK='YES'
ETH0_MAC='02:00:c0:a8:02:0c'
ETH0_IP='192.168.2.12'
ETH0_MASK='255.255.255.0'
ETH0_GATEWAY='192.168.2.1'
