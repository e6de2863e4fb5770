#!/bin/sh
# enter_container.sh GROUP MOUNT_OPTIONS VIEW_FILE COMMAND...
# Starts COMMAND as runc starts a container's process on a cgroup v2 node: moved into GROUP,
# then in its own cgroup namespace (rooted at GROUP) and mount namespace, with cgroup2 mounted
# at /sys/fs/cgroup in place of the host's (MOUNT_OPTIONS: containerd's default for an
# unprivileged container is ro,nosuid,nodev,noexec; the kernel refuses the same cgroup2 on
# top of itself, so the inherited mount goes first). VIEW_FILE receives the process's own /proc/self/cgroup and cgroup2
# mountinfo line, as the container sees them. COMMAND keeps this shell's pid.
group=$1 options=$2 view=$3
shift 3
echo $$ > "$group/cgroup.procs" || exit 90
exec unshare --cgroup --mount --propagation private sh -c '
  options=$1 view=$2
  shift 2
  umount /sys/fs/cgroup || exit 91
  mount -t cgroup2 -o "$options" cgroup2 /sys/fs/cgroup || exit 91
  { cat /proc/self/cgroup; grep " - cgroup2 " /proc/self/mountinfo; } > "$view" || exit 92
  exec "$@"' enter "$options" "$view" "$@"
