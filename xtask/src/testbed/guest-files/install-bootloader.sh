#!/bin/sh
# Makes the raw disk DISK bootable with extlinux. Run in a mount namespace of its
# own (unshare --mount): the loop mount ends with the namespace even when this is
# killed, and the loop device (mount -o loop sets autoclear) goes with it.
#
# Usage: install-bootloader.sh DISK PARTITION_OFFSET MOUNTPOINT MBR_BIN
set -eu
disk=$1
offset=$2
mountpoint=$3
mbr=$4

mount -o "loop,offset=$offset" "$disk" "$mountpoint"
extlinux --install "$mountpoint/boot/extlinux"
umount "$mountpoint"
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none
