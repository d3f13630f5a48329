# Common definitions shared by every image's scripts; sourced by common/functions.sh.
# Plain assignments only: no commands run here.

# Where provisioning logs go on the target (the agent sets LOG_FILE under this directory).
IMGCTL_LOG_DIR=/var/log/imgctl
# Where scripts keep what they must remember between runs (e.g. a "done" marker).
IMGCTL_STATE_DIR=/var/lib/imgctl
# Root of the filesystem being configured: / on the machine itself, or a mounted image.
TARGET_ROOT=${TARGET_ROOT:-/}
