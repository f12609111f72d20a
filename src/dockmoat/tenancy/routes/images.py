"""Tenancy on images: images are shared read-only; a job's tags and images are its own.

The store records which tags and image ids a job made (claims); an image is
visible to a job when it is shared (no job made it) or the job's, and a tag
when no other job claimed it. A tag is claimed before the request that sets it
goes upstream (tag, commit, import, build) and released when that request
fails; `docker load` sets tags no request names, so they are checked in the
tarball (`check_archive`) and set back afterwards where a load moved them.
"""

from __future__ import annotations

from typing import Any

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.tenancy import notfound, present, rules
from dockmoat.tenancy.jsonkeys import get_field, set_field
from dockmoat.tenancy.lookups import TAG_RULE, LoadSnapshot, Lookups
from dockmoat.tenancy.model import (
    TENANT_LABEL,
    Owner,
    Tenant,
    looks_like_image_id,
    normalize_tag,
    resolve_container,
)
from dockmoat.tenancy.routes.base import (
    Entry,
    ResponseKind,
    prune,
    request_query,
    without_order_filters,
)

SHARED_IMAGE_RULE = "tenancy.shared-image"
LOAD_FORMAT_RULE = "tenancy.load-format"


def claimed_tag(request: ApiRequest) -> str:
    """The tag `repo` and `tag` set (tag, commit, import), as claims record it."""
    return normalize_tag(rules.effective_tag(request.param("repo") or "", request.param("tag")))


# --- requests -----------------------------------------------------------------


async def by_name(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.route.params.get("name", "")
    visible, _ = await look.image_visible(tenant, ref)
    return Allow() if visible else notfound.no_such_image(ref)


async def inspect(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.route.params.get("name", "")
    visible, _ = await look.image_visible(tenant, ref)
    return Allow() if visible else notfound.no_such_image(ref, inspect=True)


async def delete(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.route.params.get("name", "")
    visible, image = await look.image_visible(tenant, ref)
    if not visible:
        return notfound.no_such_image(ref)
    if image is None:
        return Allow()
    facts = look.image_facts(tenant)
    owner = facts.image_owner(image)
    is_tag = not looks_like_image_id(ref)
    if is_tag and facts.tag_mine(normalize_tag(ref)):
        return Allow()
    if owner is not Owner.MINE:
        return Deny(
            SHARED_IMAGE_RULE,
            f"dockmoat: {SHARED_IMAGE_RULE}: {ref} is a shared image; jobs may use it "
            "but not remove it. Remove only the tags and images your job made.",
        )
    others = [t for t in image.get("RepoTags") or [] if not facts.tag_mine(str(t))]
    if others and not is_tag:
        return Deny(
            SHARED_IMAGE_RULE,
            f"dockmoat: {SHARED_IMAGE_RULE}: {ref} carries tags your job did not make; "
            "remove it by your own tag instead.",
        )
    return Allow()


async def tag(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.route.params.get("name", "")
    visible, image = await look.image_visible(tenant, ref)
    if not visible:
        return notfound.no_such_image(ref)
    if image is not None and request.param("repo"):
        return await look.claim_tag(tenant, claimed_tag(request))
    return Allow()


async def get_all(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    for ref in request.query.get("names", []):
        visible, _ = await look.image_visible(tenant, ref)
        if not visible:
            return notfound.no_such_image(ref)
    return Allow()


async def list_(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    """`since`/`before`/`reference`-free image filters pass; `since`/`before` naming an
    image the tenant cannot see answer as for a missing one (not an empty list)."""
    filters = rules.decode_filters(request.query)
    for key in rules.ORDER_FILTERS:
        for ref in filters.get(key, []):
            visible, image = await look.image_visible(tenant, ref)
            if not visible or image is None:
                return notfound.no_such_image(ref)
    return Allow()


async def commit(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.param("container") or ""
    fact = resolve_container(ref, await look.owned_containers(tenant), tenant.namespace)
    if fact is None:
        return notfound.no_such_container(ref)
    repo = request.param("repo")
    if repo:
        verdict = await look.claim_tag(tenant, claimed_tag(request))
        if isinstance(verdict, Deny):
            return verdict
    query = request_query(request)
    query["container"] = [fact.id]
    # The image is the job's: a Dockerfile-style `--change LABEL` cannot say otherwise
    # (the last change wins), nor can the config in the body.
    query["changes"] = [*query.get("changes", []), f"LABEL {TENANT_LABEL}={tenant.name}"]
    problem = rules.changes_problem(query["changes"], tenant)
    if problem is not None:
        return problem
    body = request.body_json
    if isinstance(body, dict):
        body = dict(body)
        set_field(body, "Labels", rules.with_label(get_field(body, "Labels"), tenant))
    return Rewrite(
        rules.RULE,
        (f"container {ref} -> {fact.id[:12]}", f"label {TENANT_LABEL}={tenant.name}"),
        query=query,
        body_json=body,
    )


async def create(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    """A pull (`fromImage`) or an import (`fromSrc`)."""
    tag = request.param("tag")
    pulled = request.param("fromImage")
    if pulled:
        name = pulled if "@" in pulled or "@" in (tag or "") else rules.effective_tag(pulled, tag)
        owners = look.image_facts(tenant).tag_owners.get(normalize_tag(name))
        if owners and tenant.name not in owners:
            # The pull would move another job's tag to the registry's image.
            return Deny(
                TAG_RULE,
                f"dockmoat: {TAG_RULE}: the tag {normalize_tag(name)} is in use outside job "
                f"{tenant.name} (a pull would move it). Pull it under another name.",
            )
        # A pulled image is shared read-only, as base images are: nothing is claimed.
        # (A claim made before the pull outlived a failed pull, and then hid the image
        # from every other job once it existed: two jobs pulling one base image broke.)
        return Allow()
    repo = request.param("repo")
    changes = request.query.get("changes", [])
    if changes:
        # An import's changes carry no owner label of ours: checked without one.
        problem = rules.changes_problem([*changes, f"LABEL {TENANT_LABEL}={tenant.name}"], tenant)
        if problem is not None:
            return problem
    if request.param("fromSrc") and repo:
        return await look.claim_tag(tenant, claimed_tag(request))
    return Allow()


#: The images before a job's `docker load`, kept for the exchange (`Context.metadata`).
_BEFORE_LOAD = "tenancy.images-before-load"


async def load(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    # Tags that exist before the load are not the job's, even if the load retags them.
    status, answer = await look.engine.call("GET", "/images/json")
    if status != 200 or not isinstance(answer, list):
        raise RuntimeError(f"cannot list images before a load: {status}")
    tags = {
        normalize_tag(str(t)): str(image.get("Id"))
        for image in answer for t in image.get("RepoTags") or []
    }  # fmt: skip
    ids = frozenset(str(image.get("Id")) for image in answer)
    ctx.metadata[_BEFORE_LOAD] = LoadSnapshot(tags, ids)  # read by the load's progress lines
    return Allow()


async def check_archive(look: Lookups, tenant: Tenant, archive: ArchiveTags) -> Decision:
    """The tags a job's `docker load` sets: free, the job's own, or naming the very
    image they name already (a save/load cache). A legacy tarball is refused: dockerd
    reports none of the tags it sets, so they could be neither claimed nor undone."""
    if archive.legacy:
        return Deny(
            LOAD_FORMAT_RULE,
            f"dockmoat: {LOAD_FORMAT_RULE}: this image tarball has the legacy format "
            "(a repositories file and no manifest.json), whose tags dockerd sets "
            "without reporting them, so they cannot be kept to your job. Save the "
            "image again with a current docker save.",
        )
    facts = look.image_facts(tenant)
    named = {normalize_tag(tag) for tag, _ in archive.tags}
    # An OCI index's names count where manifest.json does not name the same tag
    # (the tag is then set from the manifest; an engine with the containerd image
    # store reads the index's).
    extra = [(t, i) for t, i in archive.index_names if normalize_tag(t) not in named]
    for raw, image_id in (*archive.tags, *extra):
        tag = normalize_tag(raw)
        if facts.tag_mine(tag):
            continue
        existing = await look.image(tag)
        if existing is None and not facts.tag_owners.get(tag):
            continue  # free: the load's report claims it for the job
        if existing is not None and image_id is not None and existing.get("Id") == image_id:
            continue  # the same image again: nothing moves
        return Deny(
            TAG_RULE,
            f"dockmoat: {TAG_RULE}: the tag {tag} is in use outside job {tenant.name} "
            "(the load would move it). Save the image under another name.",
        )
    return Allow()


# --- answers ------------------------------------------------------------------


def _list_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_image_list(answer, look.image_facts(tenant))


def _inspect_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    if isinstance(answer, dict):
        return present.present_image(answer, look.image_facts(tenant))
    return answer


def _deleted(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    look.images_changed()  # dockerd's own events say so too; ours cannot come later
    ref = request.route.params.get("name", "")
    look.store.discard(tenant.name, "tag", normalize_tag(ref))
    return answer


def _tagged(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    look.images_changed()  # dockerd's own events say so too; ours cannot come later
    if request.param("repo"):
        look.record_tagged(tenant, claimed_tag(request))
    return answer


def _committed(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    look.images_changed()
    return answer


def _release_claim(look: Lookups, request: ApiRequest, tenant: Tenant) -> None:
    # The claim made for this request becomes real only with the image.
    if request.param("repo"):
        look.release_later(tenant, [claimed_tag(request)])


def _import_answer(request: ApiRequest) -> ResponseKind:
    """An import's progress is read (its image, a failure releasing its claim); a
    pull's is not (a pulled image is shared: nothing to record)."""
    return "build" if request.param("fromSrc") and request.param("repo") else "none"


def _import_line(
    look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context, line: dict[str, Any]
) -> Any:
    status = line.get("status")
    if "errorDetail" in line or "error" in line:
        look.release_later(tenant, [claimed_tag(request)])
    elif isinstance(status, str) and status.startswith("sha256:"):
        look.store.add(tenant.name, "image", status.strip())  # the import's last line
    return line


def _load_line(
    look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context, line: dict[str, Any]
) -> Any:
    """`docker load` progress: record the tags it loaded (they are the job's to
    remove), and set back those it moved that were not the job's."""
    stream = line.get("stream")
    before = ctx.metadata.get(_BEFORE_LOAD)
    if not isinstance(before, LoadSnapshot):
        before = None
    if isinstance(stream, str) and stream.startswith("Loaded image: "):
        loaded = normalize_tag(stream.split(": ", 1)[1].strip())
        # Unknown snapshot (should not happen): claim nothing rather than a shared tag.
        if before is not None and loaded not in before.tags:
            look.store.add(tenant.name, "tag", loaded)
            look.record_tagged(tenant, loaded)
        elif before is not None and not look.image_facts(tenant).tag_mine(loaded):
            look.spawn_restore(tenant, loaded, before)
    elif isinstance(stream, str) and stream.startswith("Loaded image ID: "):
        image_id = stream.split(": ", 1)[1].strip()
        if before is not None and image_id not in before.ids:
            look.store.add(tenant.name, "image", image_id)
    return line


ENTRIES: tuple[Entry, ...] = (
    Entry(
        "images.list",
        list_,
        inline=without_order_filters,
        answer="json",
        on_answer=_list_answer,
    ),
    Entry("images.get_all", get_all),
    Entry("images.get", by_name),
    Entry("images.history", by_name),
    Entry("images.inspect", inspect, answer="json", on_answer=_inspect_answer),
    Entry("images.load", load, answer="load", on_line=_load_line),
    Entry("images.create", create, answer=_import_answer, on_line=_import_line),
    Entry("images.push", by_name),
    Entry("images.tag", tag, answer="json", on_answer=_tagged, on_error=_release_claim),
    Entry("images.prune", prune, inline=True),
    Entry("images.delete", delete, answer="json", on_answer=_deleted),
    # A commit's answer is read back only to drop the kept image listing (an untagged
    # commit may have no image event on older engines); its tag's image is not recorded as
    # `images.tag` records it; only a failure releases the claim.
    Entry(
        "images.commit",
        commit,
        body=True,
        answer="json",
        on_answer=_committed,
        on_error=_release_claim,
    ),
)

#: A registry search (its term names a remote repository, not the engine's objects),
#: and attestations, whose image the reference table check refuses for jobs (refs.py
#: does not list it as resolved).
UNTOUCHED: frozenset[str] = frozenset({"images.search", "images.attestations"})
