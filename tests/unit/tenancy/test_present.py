from dockmoat.tenancy import present
from dockmoat.tenancy.model import TENANT_LABEL, ImageFacts, Owner, Tenant, normalize_tag

A = Tenant.job("a")
LABEL_A = {TENANT_LABEL: "a"}
LABEL_B = {TENANT_LABEL: "b"}


def test_container_reads_back_without_prefix() -> None:
    inspect = {
        "Name": "/a--db",
        "Config": {"Labels": LABEL_A},
        "HostConfig": {
            "NetworkMode": "a--app_default",
            "Binds": ["a--data:/d", "/ws:/w"],
            "Links": ["/a--db:/a--web/database"],
        },
        "NetworkSettings": {"Networks": {"a--app_default": {}, "bridge": {}}},
        "Mounts": [{"Type": "volume", "Name": "a--data"}],
    }
    shown = present.present_container(inspect, A)
    assert shown["Name"] == "/db"
    assert shown["HostConfig"]["NetworkMode"] == "app_default"
    assert shown["HostConfig"]["Binds"] == ["data:/d", "/ws:/w"]
    assert shown["HostConfig"]["Links"] == ["/db:/web/database"]
    assert set(shown["NetworkSettings"]["Networks"]) == {"app_default", "bridge"}
    assert shown["Mounts"][0]["Name"] == "data"


def test_lists_show_only_the_tenants() -> None:
    entries = [
        {"Id": "1", "Names": ["/a--db"], "Labels": LABEL_A},
        {"Id": "2", "Names": ["/b--db"], "Labels": LABEL_B},
        {"Id": "3", "Names": ["/host"], "Labels": {}},
    ]
    assert [e["Names"] for e in present.present_container_list(entries, A)] == [["/db"]]
    volumes = {
        "Volumes": [
            {"Name": "a--v", "Labels": LABEL_A},
            {"Name": "a--implicit", "Labels": None},
            {"Name": "b--v", "Labels": LABEL_B},
            {"Name": "a--forged", "Labels": LABEL_B},
            {"Name": "hostvol", "Labels": None},
        ],
        "Warnings": None,
    }
    shown = present.present_volume_list(volumes, A)
    assert [v["Name"] for v in shown["Volumes"]] == ["v", "implicit"]
    networks = [
        {
            "Name": "bridge",
            "Labels": {},
            "Containers": {"x": {"Name": "b--db"}, "y": {"Name": "a--db"}},
        },
        {"Name": "a--app_default", "Labels": LABEL_A},
        {"Name": "b--app_default", "Labels": LABEL_B},
    ]
    shown_nets = present.present_network_list(networks, A)
    assert [n["Name"] for n in shown_nets] == ["bridge", "app_default"]
    assert shown_nets[0]["Containers"] == {"y": {"Name": "db"}}


def _facts() -> ImageFacts:
    return ImageFacts(
        tenant="a",
        id_owners={"sha256:loaded-by-b": frozenset({"b"})},
        tag_owners={"mine:latest": frozenset({"a"}), "theirs:latest": frozenset({"b"})},
    )


def test_images() -> None:
    facts = _facts()
    shared = {"Id": "sha256:s", "RepoTags": ["busybox:latest", "mine:latest", "theirs:latest"]}
    built_b = {"Id": "sha256:bb", "RepoTags": ["b-app:latest"], "Labels": LABEL_B}
    loaded_b = {"Id": "sha256:loaded-by-b", "RepoTags": []}
    only_b_tag = {"Id": "sha256:o", "RepoTags": ["theirs:latest"]}
    built_a = {"Id": "sha256:aa", "RepoTags": ["mine:latest"], "Config": {"Labels": LABEL_A}}
    assert facts.image_owner(shared) is Owner.SHARED
    assert facts.image_owner(built_b) is Owner.FOREIGN
    assert facts.image_owner(built_a) is Owner.MINE
    listed = present.present_image_list([shared, built_b, loaded_b, only_b_tag, built_a], facts)
    assert [i["Id"] for i in listed] == ["sha256:s", "sha256:aa"]
    assert listed[0]["RepoTags"] == ["busybox:latest", "mine:latest"]


def test_normalize_tag() -> None:
    assert normalize_tag("busybox") == "busybox:latest"
    assert normalize_tag("docker.io/library/busybox:1") == "busybox:1"
    assert normalize_tag("localhost:5000/x") == "localhost:5000/x:latest"
    assert normalize_tag("x@sha256:ab") == "x@sha256:ab"


def test_events() -> None:
    facts = _facts()
    mine = {
        "Type": "container",
        "Action": "start",
        "Actor": {
            "ID": "1",
            "Attributes": {"name": "a--db", TENANT_LABEL: "a", "image": "busybox"},
        },
    }
    shown = present.present_event(mine, A, facts)
    assert shown is not None and shown["Actor"]["Attributes"]["name"] == "db"
    theirs = {
        "Type": "container",
        "Actor": {"ID": "2", "Attributes": {"name": "b--db", TENANT_LABEL: "b"}},
    }
    assert present.present_event(theirs, A, facts) is None
    assert present.present_event(
        {"Type": "volume", "Actor": {"ID": "a--v", "Attributes": {}}}, A, facts
    ) == {
        "Type": "volume",
        "Actor": {"ID": "v", "Attributes": {}},
    }
    assert (
        present.present_event(
            {"Type": "volume", "Actor": {"ID": "b--v", "Attributes": {}}}, A, facts
        )
        is None
    )
    bridge = {
        "Type": "network",
        "Actor": {"ID": "n", "Attributes": {"name": "bridge", "container": "2"}},
    }
    assert present.present_event(bridge, A, facts) is None
    assert present.present_event({"Type": "daemon", "Actor": {}}, A, facts) is None
    tagged = {
        "Type": "image",
        "Action": "tag",
        "Actor": {"ID": "x", "Attributes": {"name": "mine:latest"}},
    }
    assert present.present_event(tagged, A, facts) is not None
    other = {
        "Type": "image",
        "Action": "tag",
        "Actor": {"ID": "x", "Attributes": {"name": "theirs:latest"}},
    }
    assert present.present_event(other, A, facts) is None


def test_system_df_counts_only_the_job() -> None:
    facts = _facts()
    answer = {
        "LayersSize": 1,
        "Images": [{"Id": "sha256:s", "RepoTags": ["busybox:latest"], "Containers": 9}],
        "Containers": [
            {"Id": "1", "Names": ["/a--db"], "Labels": LABEL_A, "ImageID": "sha256:s"},
            {"Id": "2", "Names": ["/b--db"], "Labels": LABEL_B, "ImageID": "sha256:s"},
        ],
        "Volumes": [{"Name": "a--v", "Labels": LABEL_A}, {"Name": "b--v", "Labels": LABEL_B}],
        "BuildCache": [{"ID": "x"}],
    }
    shown = present.present_df(answer, A, facts)
    assert [c["Names"] for c in shown["Containers"]] == [["/db"]]
    assert shown["Images"][0]["Containers"] == 1
    assert [v["Name"] for v in shown["Volumes"]] == ["v"]
    assert shown["BuildCache"] == []
    assert shown["LayersSize"] == 0  # busybox's Size was not given: the daemon's 1 is gone


def test_system_df_layers_size_is_the_images_the_job_sees() -> None:
    facts = _facts()
    images = [
        {"Id": "sha256:s", "RepoTags": ["busybox:latest"], "Size": 100, "SharedSize": 100},
        {"Id": "sha256:m", "RepoTags": ["mine:latest"], "Size": 130, "SharedSize": 100},
        {"Id": "sha256:t", "RepoTags": ["theirs:latest"], "Size": 5000, "SharedSize": 100},
        {"Id": "sha256:u", "RepoTags": ["mine:2"], "Size": 7, "SharedSize": -1},
    ]
    answer = {"LayersSize": 5137, "Images": images, "Containers": [], "Volumes": []}
    shown = present.present_df(answer, A, facts)
    assert [i["Id"] for i in shown["Images"]] == ["sha256:s", "sha256:m", "sha256:u"]
    assert shown["LayersSize"] == 0 + 30 + 7 + 100  # each one's own part, the shared once


def test_own_network_shows_all_its_containers() -> None:
    network = {
        "Name": "a--net",
        "Labels": LABEL_A,
        "Containers": {"1": {"Name": "a--db"}, "2": {"Name": "happy_turing"}},
    }
    shown = present.present_network(network, A)
    assert shown["Name"] == "net"
    assert shown["Containers"] == {"1": {"Name": "db"}, "2": {"Name": "happy_turing"}}


def test_errors_read_back_without_the_prefix() -> None:
    answer = {
        "message": 'Conflict. The container name "/a--db" is already in use by container "1".'
    }
    assert present.present_error(answer, A) == {
        "message": 'Conflict. The container name "/db" is already in use by container "1".'
    }
    untouched = {"message": "No such container: x"}
    assert present.present_error(untouched, A) is untouched
    assert present.present_error(None, A) is None
