"""An SSH session to a devkit: host-key checking, remote commands and atomic uploads.

Used by ``deploy.flash``. Host keys are checked like OpenSSH's
``StrictHostKeyChecking=yes`` (or ``accept-new`` when asked): a changed key is
always refused. Every failure becomes a ``DeployError`` that names the fix.
"""

from __future__ import annotations

import getpass
import logging
import shlex
import socket
import subprocess
from pathlib import Path

from edgefree.errors import DeployError, MissingRuntimeError

CONNECT_TIMEOUT_S = 15
# paramiko's transport thread logs a failed handshake with a traceback; the DeployError that follows names it in
# one line (a handler here keeps logging's last-resort printer off; nothing imports paramiko for it)
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _paramiko():
    try:
        import paramiko
    except ImportError as exc:
        raise MissingRuntimeError("flashing needs paramiko: pip install 'paramiko==5.1.0'") from exc
    return paramiko


def _accept_new_policy(known_hosts: Path):
    """OpenSSH's ``accept-new``: trust an unknown host once and append its key to ``known_hosts``."""
    paramiko = _paramiko()

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with known_hosts.open("a") as f:  # append, never rewrite the user's file
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    return AcceptNew()


def split_host(host: str) -> tuple[str, str]:
    """``user@host`` -> (user, host); a bare host means the local user name."""
    user, at, name = host.rpartition("@")
    if not name:
        raise DeployError(f"--host {host!r} names no host; use user@host, e.g. pi@raspberrypi.local")
    if at and not user:
        raise DeployError(f"--host {host!r} names no user before '@': use user@{name}, or {name} alone for your "
                          "own user name")
    if name.count(":") == 1:  # host:port (an IPv6 address has two colons or more)
        bare, _, port = name.partition(":")
        raise DeployError(f"--host {host!r} holds a port: pass it with --port, --host {user + '@' if user else ''}"
                          f"{bare} --port {port if port.isdigit() else 'PORT'}")
    return user or getpass.getuser(), name


def check_key(key: Path | None) -> None:
    """Refuse, before connecting, a --key that is no private key or needs a passphrase."""
    if key is None:
        return
    key = Path(key).expanduser()
    if not key.is_file():
        raise DeployError(f"--key {key} is not a file: pass the path of a private key (e.g. ~/.ssh/id_ed25519)")
    paramiko = _paramiko()
    try:
        try:
            paramiko.PKey.from_path(str(key))
        except TypeError as exc:  # paramiko's way of saying the key needs a password it was not given
            raise paramiko.PasswordRequiredException(str(exc)) if "password" in str(exc).lower() else exc
    except paramiko.PasswordRequiredException as exc:
        raise DeployError(f"--key {key} is protected by a passphrase, which edgefree does not ask for: add it to "
                          f"your ssh agent (ssh-add {key}) and flash without --key") from exc
    except (paramiko.SSHException, ValueError, TypeError, OSError) as exc:
        raise DeployError(f"--key {key} is not a private key paramiko can read ({exc}): pass the private half "
                          "(not the .pub file) of an ed25519, ECDSA or RSA key") from exc


class Device:
    """A connected device. Use as a context manager; commands run through the login shell."""

    def __init__(self, host: str, port: int = 22, key: Path | None = None, known_hosts: Path | None = None,
                 accept_new_host_key: bool = False):
        paramiko = _paramiko()
        self.user, self.hostname = split_host(host)
        self.port = port
        self.where = f"{self.user}@{self.hostname}:{port}"
        self.link_errors = (OSError, EOFError, paramiko.SSHException)  # the connection died midway
        known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        self.client = paramiko.SSHClient()
        if known_hosts.exists():
            self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(
            _accept_new_policy(known_hosts) if accept_new_host_key else paramiko.RejectPolicy())
        self._connect(paramiko, key, known_hosts)
        try:
            self.sftp = self.client.open_sftp()
            self.home = self.sftp.normalize(".")
        except self.link_errors as exc:
            self.client.close()
            raise DeployError(f"{self.where} accepted the login but offers no SFTP ({type(exc).__name__}: "
                              f"{exc or 'the channel closed'}), which flash copies files with: enable it in the "
                              "device's sshd_config (Subsystem sftp internal-sftp) and restart sshd") from exc

    def _connect(self, paramiko, key: Path | None, known_hosts: Path) -> None:
        try:
            self.client.connect(self.hostname, port=self.port, username=self.user,
                                key_filename=str(key) if key else None,
                                look_for_keys=key is None, allow_agent=key is None,
                                timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S,
                                auth_timeout=CONNECT_TIMEOUT_S)
        except paramiko.BadHostKeyException as exc:
            raise DeployError(
                f"the host key of {self.where} CHANGED since it was recorded in {known_hosts}: it may be "
                "another machine or an attack. If the device was reinstalled, remove its old line "
                f"(ssh-keygen -R {exc.hostname} -f {known_hosts}) and flash again") from exc
        except paramiko.AuthenticationException as exc:
            which = f"the key {key}" if key else "your ssh agent and default keys (~/.ssh/id_*)"
            raise DeployError(f"{self.where} refused authentication with {which}: pass --key with a private "
                              f"key whose public half is in the device's ~/.ssh/authorized_keys") from exc
        except paramiko.SSHException as exc:
            if "No authentication methods available" in str(exc):
                raise DeployError(f"no SSH key to log in to {self.where} with: ~/.ssh holds no id_* key and no ssh "
                                  "agent offers one; pass --key with a private key whose public half is in the device's "
                                  "~/.ssh/authorized_keys, or load one into your agent (ssh-add)") from exc
            if "known_hosts" in str(exc):
                raise DeployError(
                    f"{self.where} is not in {known_hosts}, so its identity cannot be checked. Check the "
                    "key fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and "
                    "connect once with ssh, or pass --accept-new-host-key to trust it now") from exc
            raise DeployError(f"SSH to {self.where} failed: {exc}. Is an SSH server listening there (the host and "
                              "--port of the device's sshd)?") from exc
        except (OSError, socket.timeout) as exc:  # refused, unreachable, DNS, timeout
            reason = str(exc).removeprefix("[Errno None] ") or type(exc).__name__  # paramiko's refusals carry no errno
            raise DeployError(f"cannot connect to {self.where}: {reason}. Is the device "
                              "on, sshd running, and the host and --port right?") from exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def path(self, remote: str) -> str:
        """An absolute remote path: ``~`` means the login's home (SFTP does not expand it)."""
        return self.home + remote[1:] if remote == "~" or remote.startswith("~/") else remote

    def quote(self, command: str) -> str:
        """A user-given command prefix (``env X=1 ~/venv/bin/python``) quoted word by word, ``~`` expanded."""
        return " ".join(shlex.quote(self.path(word)) for word in shlex.split(command))

    def run(self, command: str, stdin: str | None = None, timeout: float = 900,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` on the device; with ``check``, a non-zero exit raises with its stderr."""
        chan_in, chan_out, chan_err = self.client.exec_command(command, timeout=timeout)
        if stdin is not None:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out, err = chan_out.read().decode(), chan_err.read().decode()
        status = chan_out.channel.recv_exit_status()
        if check and status != 0:
            raise DeployError(f"on {self.where}, `{command}` failed (exit {status}): {err.strip()[-2000:]}")
        return subprocess.CompletedProcess(command, status, out, err)

    def upload(self, local: Path, remote: str) -> int:
        """Copy ``local`` to ``remote`` through ``remote.part`` + rename, so it is whole or absent."""
        part = remote + ".part"
        self.sftp.put(str(local), part)
        self.sftp.posix_rename(part, remote)
        return local.stat().st_size

    def download(self, remote: str, local: Path) -> Path:
        self.sftp.get(remote, str(local))
        return local

