#!/bin/sh
# Runs inside the freshly debootstrapped tree (chroot, own mount namespace) and
# turns the Debian minbase into the Flatcar-shaped rehearsal guest. The files it
# relies on (units, os-release, sudoers ...) were put in place before it runs.
#
# Also makes the guest's Python: Debian's PyPy, laid out like a portable PyPy
# release tarball, in /var/tmp/rehearsal-python/ (the caller moves it out; the
# guest itself keeps no Python).
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

# The user Flatcar logs in as: no password, no SSH key; Ignition brings the key.
getent group wheel >/dev/null || groupadd --system wheel
id core >/dev/null 2>&1 ||
  useradd --create-home --uid 500 --user-group --groups sudo,wheel \
    --shell /bin/bash --password '*' core
chmod 0440 /etc/sudoers.d/wheel

# Flatcar's mount points: the OEM partition at /oem (/usr/share/oem links to it),
# the ESP at /boot; extensions in /etc/extensions (links into /opt/extensions).
mkdir -p /oem /etc/extensions /opt/extensions
ln -sfn ../../oem /usr/share/oem

# Units: Flatcar's stand-ins on, systemd-sysext merging extensions into /usr with
# Flatcar's reload after it, Debian's package-manager timers off.
systemctl enable usr.mount boot.mount oem.mount flatcar-first-boot.service \
  update-engine.service locksmithd.service systemd-networkd.service sshd-keygen.service \
  containerd.service systemd-timesyncd.service systemd-sysext.service ensure-sysext.service
systemctl disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer

# A small initramfs (only the disk drivers) under fixed names the boot loader names.
update-initramfs -u -k all
for kernel in /boot/vmlinuz-*; do
  version=${kernel#/boot/vmlinuz-}
  mv "$kernel" /boot/vmlinuz
  mv "/boot/initrd.img-$version" /boot/initrd.img
done
rm -f /vmlinuz /vmlinuz.old /initrd.img /initrd.img.old

# The Python a build bootstraps: PyPy from this Debian release, relocatable
# (its launcher finds libpypy next to itself and the stdlib under ../lib).
mkdir -p /var/tmp/rehearsal-python/debs
cd /var/tmp/rehearsal-python/debs
apt-get download pypy3 pypy3-lib
for deb in ./*.deb; do dpkg-deb -x "$deb" extracted; done
pypy_version=$(dpkg-deb -f ./pypy3_*.deb Version)
pypy_version=${pypy_version%%+*}
python_lib=$(basename extracted/usr/lib/pypy3.*)
name="$python_lib-v$pypy_version-linux64"
mkdir -p "../$name/bin" "../$name/lib"
cp -a extracted/usr/bin/"$python_lib" extracted/usr/lib/x86_64-linux-gnu/lib"$python_lib"-c.so "../$name/bin/"
ln -s "$python_lib" "../$name/bin/pypy3"
for alias in python python3 "python${python_lib#pypy}"; do
  ln -s "$python_lib" "../$name/bin/$alias"
done
cp -a "extracted/usr/lib/$python_lib" "../$name/lib/"
cd ..
tar -cjf "$name.tar.bz2" "$name"
rm -rf debs "$name"

# Flatcar carries no package-manager state, host keys, machine id or Debian
# markers; the first boot makes its own keys and id.
rm -rf /var/cache/apt/* /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
  /usr/share/locale/* /usr/share/info/* /var/log/*.log /var/log/apt
rm -f /etc/ssh/ssh_host_* /etc/machine-id /var/lib/dbus/machine-id /etc/debian_version \
  /etc/resolv.conf /etc/containerd/config.toml
echo localhost >/etc/hostname
printf '127.0.0.1 localhost\n::1 localhost\n' >/etc/hosts

# No Python anywhere on the guest's PATH: the build must bring its own.
for dir in /usr/bin /usr/sbin /usr/local/bin /bin /sbin; do
  for python in "$dir"/python*; do
    if [ -e "$python" ]; then
      echo "configure-guest: $python exists, but Flatcar has no Python" >&2
      exit 1
    fi
  done
done
