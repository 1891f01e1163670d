"""One reused SSH connection to an SFTP server: the host key pinned (never learned), a key
or a password to log in, a new connection after a break, and its failures as StorageErrors
that name no secret."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import asyncssh

from app.services.storage.base import StorageError

CONNECT_TIMEOUT = 20.0
KEEPALIVE_SECONDS = 15.0
# AES-GCM first: with AES-NI it moves a 300 MiB put in 0.51 s where asyncssh's default
# (chacha20-poly1305) takes 0.75-0.84 s on loopback; the rest of the default list follows.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "chacha20-poly1305@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr"]

# Refusals that repeating cannot change: credentials, host key, configuration.
PERMANENT = (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable,
             asyncssh.KeyExchangeFailed, asyncssh.IllegalUserName,
             asyncssh.ProtocolNotSupported, asyncssh.ServiceNotAvailable)
TRANSIENT_SFTP = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)
TRANSPORT_ERRORS = (asyncssh.Error, asyncssh.ChannelOpenError, OSError)


@dataclass
class _Link:
    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock
    conn: asyncssh.SSHClientConnection | None = None
    sftp: asyncssh.SFTPClient | None = None


class SftpSession:
    def __init__(self, host: str, port: int, user: str, *, known_host: str,
                 password: str | None = None, private_key: str | None = None,
                 passphrase: str | None = None, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.host_keys = pinned_host_keys(known_host)
        self._password = password
        self._client_keys = [_private_key(private_key, passphrase)] if private_key else []
        self.connect_timeout = connect_timeout
        self._link: _Link | None = None
        self.connects = 0  # connections opened (one is reused until it breaks)

    async def client(self) -> asyncssh.SFTPClient:
        """The SFTP client of the live connection, connecting first if there is none."""
        loop = asyncio.get_running_loop()
        link = self._link
        if link is None or link.loop is not loop:  # a CLI run has its own loop
            link = self._link = _Link(loop, asyncio.Lock())
        async with link.lock:
            if link.conn is None or link.conn.is_closed() or link.sftp is None:
                await self._open(link)
            assert link.sftp is not None
            return link.sftp

    async def _open(self, link: _Link) -> None:
        self._drop(link)
        self.connects += 1
        conn = await asyncssh.connect(
            self.host, self.port, username=self.user, known_hosts=self._known_hosts,
            client_keys=self._client_keys or None, password=self._password,
            agent_path=None, config=[], preferred_auth=self._auth_methods(),
            connect_timeout=self.connect_timeout, login_timeout=self.connect_timeout,
            keepalive_interval=KEEPALIVE_SECONDS, keepalive_count_max=3,
            encryption_algs=CIPHERS)
        try:
            link.sftp = await conn.start_sftp_client()
        except BaseException:
            conn.abort()
            raise
        link.conn = conn

    def _known_hosts(self, host: str, addr: str, port: int | None
                     ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey],
                                list[asyncssh.SSHKey]]:
        # The pinned keys whatever name the server was reached by (an alias, a tunnel).
        return list(self.host_keys), [], []

    def _auth_methods(self) -> list[str]:
        return (["publickey"] if self._client_keys else []) + (
            ["password"] if self._password else [])

    def _drop(self, link: _Link) -> None:
        if link.conn is not None:
            link.conn.abort()
        link.conn = link.sftp = None

    async def close(self) -> None:
        if self._link is not None and self._link.conn is not None:
            conn = self._link.conn
            self._drop(self._link)
            with suppress(Exception):
                await conn.wait_closed()

    @contextmanager
    def mapped(self, what: str) -> Iterator[None]:
        """The server's and the network's failures as StorageErrors (never put around
        reading a caller's stream, whose own errors pass as they are)."""
        try:
            yield
        except TRANSPORT_ERRORS as exc:
            link = self._link
            # A broken connection is replaced on the next call; a lost SFTP channel on a
            # live connection too.
            if link is not None and link.conn is not None and (
                    link.conn.is_closed() or isinstance(exc, TRANSIENT_SFTP)):
                self._drop(link)
            raise self.error(exc, what) from exc

    def error(self, exc: BaseException, what: str) -> StorageError:
        if isinstance(exc, asyncssh.PermissionDenied):
            reason = f"authentication as {self.user!r} failed ({_reason(exc)})"
        elif isinstance(exc, asyncssh.HostKeyNotVerifiable):
            reason = (f"the host key of {self.host}:{self.port} is not the pinned "
                      f"sftp_known_host; refused ({_reason(exc)})")
        else:
            reason = _reason(exc)
        return StorageError(f"{what}: {reason}", transient=is_transient(exc))


def pinned_host_keys(known_host: str) -> list[asyncssh.SSHKey]:
    """The public keys in known_hosts-style lines ("[host]:port type base64", "host type
    base64" or "type base64"); anything else is refused, never treated as "accept any"."""
    keys = []
    for line in known_host.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):  # @revoked, @cert-authority: not a key to trust
            raise StorageError(f"sftp_known_host: {fields[0]} lines are not supported; "
                               "give the server's host key itself")
        for i, field in enumerate(fields[:-1]):
            if fields[i + 1].startswith("AAAA"):
                try:
                    keys.append(asyncssh.import_public_key(f"{field} {fields[i + 1]}"))
                except (asyncssh.KeyImportError, ValueError) as exc:
                    raise StorageError(f"sftp_known_host holds an unreadable {field} key"
                                       ) from exc
                break
    if not keys:
        raise StorageError("sftp_known_host holds no public host key")
    return keys


def _private_key(text: str, passphrase: str | None) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_private_key(text, passphrase)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        # The library's message may quote the key; ours names only the settings.
        said = str(exc).lower()
        if passphrase is None and "passphrase" in said:
            raise StorageError("sftp_private_key is encrypted: set "
                               "sftp_private_key_passphrase") from exc
        if passphrase is not None and ("incorrect passphrase" in said
                                       or "unable to decrypt" in said):
            raise StorageError("sftp_private_key_passphrase does not open "
                               "sftp_private_key") from exc
        if isinstance(exc, asyncssh.KeyEncryptionError):  # a cipher or KDF it cannot use
            raise StorageError(f"sftp_private_key cannot be opened: {exc}") from exc
        raise StorageError("sftp_private_key is not a readable private key "
                           "(OpenSSH or PEM format)") from exc


def is_transient(exc: BaseException) -> bool:
    """Whether repeating may succeed: the network or the connection, not a refusal."""
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, asyncssh.SFTPError):
        return isinstance(exc, TRANSIENT_SFTP)
    return isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | OSError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error | asyncssh.ChannelOpenError):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__


__all__ = ["SftpSession", "TRANSPORT_ERRORS", "is_transient", "pinned_host_keys"]
