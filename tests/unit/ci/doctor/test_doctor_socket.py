import stat

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.ci.doctor.checks_socket import can_connect, check_socket
from dockmoat.ci.doctor.facts import CallerFacts, SocketFacts
from dockmoat.ci.doctor.model import Status

SOCK = SocketFacts(
    path="/var/run/docker.sock",
    exists=True,
    is_socket=True,
    mode=stat.S_IFSOCK | 0o660,
    uid=0,
    gid=105,
    owner_name="root",
    group_name="docker",
    group_members=(),
)
ALICE = CallerFacts(uid=1000, user="alice", gids=frozenset({1000}))


def _with(**changes: object) -> SocketFacts:
    values = {f: getattr(SOCK, f) for f in SOCK.__slots__}
    values.update(changes)
    return SocketFacts(**values)  # type: ignore[arg-type]


def test_root_and_group_members_may_connect() -> None:
    root = CallerFacts(uid=0, user="root", gids=frozenset({0}))
    assert check_socket(SOCK, root).status is Status.OK  # type: ignore[union-attr]
    member = CallerFacts(uid=1000, user="alice", gids=frozenset({1000, 105}))
    finding = check_socket(SOCK, member)
    assert finding is not None and finding.status is Status.OK
    assert "group docker" in finding.detail


def test_outsider_gets_the_usermod_fix() -> None:
    finding = check_socket(SOCK, ALICE)
    assert finding is not None and finding.status is Status.FAIL
    assert "`sudo usermod -aG docker alice`" in (finding.fix or "")
    assert "--group-add 105" in (finding.fix or "")
    assert "srw-rw---- root:docker" in finding.detail


def test_member_in_group_database_but_not_in_session_gets_newgrp() -> None:
    finding = check_socket(_with(group_members=("alice",)), ALICE)
    assert finding is not None and "newgrp docker" in (finding.fix or "")
    assert "usermod" not in (finding.fix or "")


def test_unnamed_group_gets_chgrp_or_group_add() -> None:
    finding = check_socket(_with(group_name=None, gid=4242), ALICE)
    assert finding is not None and finding.status is Status.FAIL
    assert "sudo chgrp docker /var/run/docker.sock" in (finding.fix or "")
    assert "--group-add 4242" in (finding.fix or "")


def test_inside_a_container_the_fix_is_group_add() -> None:
    inside = CallerFacts(uid=1000, user="ci", gids=frozenset({1000}), in_container=True)
    finding = check_socket(SOCK, inside)
    assert finding is not None
    assert (finding.fix or "").startswith("start this container with --group-add 105")


def test_group_without_write_permission_needs_chmod_too() -> None:
    member = CallerFacts(uid=1000, user="alice", gids=frozenset({105}))
    finding = check_socket(_with(mode=stat.S_IFSOCK | 0o640), member)
    assert finding is not None and finding.status is Status.FAIL
    assert (
        finding.fix == "`sudo chmod g+rw /var/run/docker.sock` (the group has no write permission)"
    )


def test_world_writable_socket_is_a_warning() -> None:
    finding = check_socket(_with(mode=stat.S_IFSOCK | 0o666), ALICE)
    assert finding is not None and finding.status is Status.WARN
    assert "chmod o-rw" in (finding.fix or "")


def test_not_a_socket_and_missing() -> None:
    folder = check_socket(_with(is_socket=False, mode=stat.S_IFDIR | 0o755), ALICE)
    assert folder is not None and folder.status is Status.FAIL
    assert check_socket(SocketFacts(path="/x", exists=False), ALICE) is None


@given(
    mode=st.integers(0, 0o777),
    uid=st.integers(0, 3),
    gid=st.integers(0, 3),
    caller=st.integers(0, 3),
    groups=st.frozensets(st.integers(0, 3)),
)
def test_can_connect_follows_unix_permission_classes(
    mode: int, uid: int, gid: int, caller: int, groups: frozenset[int]
) -> None:
    sock = _with(mode=stat.S_IFSOCK | mode, uid=uid, gid=gid)
    who = CallerFacts(uid=caller, user="u", gids=groups)
    # The kernel picks exactly one class: owner, else group, else other.
    if caller == 0:
        expected = True
    elif caller == uid:
        expected = bool(mode & 0o200)
    elif gid in groups:
        expected = bool(mode & 0o020)
    else:
        expected = bool(mode & 0o002)
    assert can_connect(sock, who) is expected
    finding = check_socket(sock, who)
    assert finding is not None
    assert (finding.status is Status.FAIL) is (not expected)


def test_a_folder_on_the_way_that_cannot_be_entered() -> None:
    member = CallerFacts(uid=1000, user="alice", gids=frozenset({105}))
    finding = check_socket(
        _with(path="/run/private/docker.sock", blocked_dir="/run/private"), member
    )
    assert finding is not None and finding.status is Status.FAIL
    assert "may not enter the folder /run/private" in finding.detail
    assert "`sudo chmod o+x /run/private`" in (finding.fix or "")
    root = CallerFacts(uid=0, user="root", gids=frozenset({0}))
    assert check_socket(_with(blocked_dir="/run/private"), root).status is Status.OK  # type: ignore[union-attr]
