# Sourced by scripts/fetch-kernel.sh and scripts/fetch-grub-arm64.sh: a private apt state for
# Debian's arm64 packages (build/aarch64/apt: arm64 package lists from this machine's sources,
# no dpkg status), so fetching them leaves the machine's dpkg architectures as they are.
# Sets APT_ARM64 (options for apt-get/apt-cache) and fetches the lists once.
st=$PWD/build/aarch64/apt
APT_ARM64=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Dir::State::Lists="$st/lists"
           -o Dir::Cache="$st/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
mkdir -p "$st/lists/partial" "$st/cache/archives/partial"
[ -n "$(ls "$st/lists" | grep -v partial)" ] || apt-get "${APT_ARM64[@]}" update -qq
