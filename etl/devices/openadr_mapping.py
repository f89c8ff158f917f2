"""The OpenADR bridge's mapping file (TOML, docs/openadr.md): which registered VEN, and which of
its resources, act for each Voltus site. Read and checked whole before the bridge starts: any
fault is one ConfigError line that names the file and the entry. Loads no OpenADR library."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.base.errors import ConfigError
from etl.base.logs import one_line
from etl.devices.mapping_file import read_toml

__all__ = ["DEFAULT_MARKET_CONTEXT", "MappedSite", "OpenAdrMapping", "load_mapping"]

DEFAULT_MARKET_CONTEXT = "oadr://voltus"
MOST_ID_CHARS = 200  # as etl's other ids: the store's and the readings' limit
MOST_RESOURCES = 100  # of one site
TOP_KEYS = frozenset({"market_context", "vens", "sites"})
SITE_KEYS = frozenset({"site_id", "ven", "resources", "meter_id"})
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


@dataclass(frozen=True)
class MappedSite:
    site_id: str
    ven: str  # the name the VEN registers with (its venName), also its venID here
    # the VEN's resources that act for the site: the event's targets, and whose reports are
    # the site's. None: the whole VEN is the site's (it serves no other site)
    resources: tuple[str, ...] | None
    meter_id: str | None  # the Voltus meter its reports are sent as; None: the site's only one


@dataclass(frozen=True)
class OpenAdrMapping:
    vens: frozenset[str]
    sites: Mapping[str, MappedSite]  # by site id
    market_context: str = DEFAULT_MARKET_CONTEXT

    def site_reported(self, ven: str, resource_id: str | None) -> MappedSite | None:
        """The site whose readings a VEN's report of this resource are: the site listing the
        resource, or the site the whole VEN is; None when the resource is no site's."""
        for site in self.sites.values():
            if site.ven != ven:
                continue
            if site.resources is None or resource_id in site.resources:
                return site
        return None


def load_mapping(path: Path) -> OpenAdrMapping:
    """The mapping in the file, checked; ConfigError (one line) for any fault."""
    origin = f"OpenADR mapping {one_line(str(path))[:200]}"
    document = read_toml(str(path), origin)
    try:
        return _mapping(document)
    except ValueError as error:
        raise ConfigError(f"{origin}: {error}") from None


def _mapping(document: dict[str, Any]) -> OpenAdrMapping:
    _known_keys(document, TOP_KEYS, "")
    market_context = document.get("market_context", DEFAULT_MARKET_CONTEXT)
    _identifier(market_context, "market_context")
    if not URI.fullmatch(market_context):
        raise ValueError(f"market_context {market_context!r} is not a URI (oadr://voltus)")
    vens = _identifiers(document.get("vens"), "vens")
    if not vens:
        raise ValueError('vens lists no VEN: vens = ["the name a VEN registers with"]')
    entries = document.get("sites")
    if not isinstance(entries, list) or not entries:
        raise ValueError("no [[sites]]: map at least one site to a VEN")
    sites: dict[str, MappedSite] = {}
    by_ven: dict[str, list[MappedSite]] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"sites[{number}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a table")
        site = _site(entry, where, frozenset(vens))
        if site.site_id in sites:
            raise ValueError(f"{where}: site {site.site_id!r} is mapped twice")
        _no_shared_resources(site, by_ven.setdefault(site.ven, []), where)
        sites[site.site_id] = site
        by_ven[site.ven].append(site)
    return OpenAdrMapping(frozenset(vens), sites, market_context)


def _site(entry: dict[str, Any], where: str, vens: frozenset[str]) -> MappedSite:
    _known_keys(entry, SITE_KEYS, f"{where}.")
    site_id = _identifier(entry.get("site_id"), f"{where}.site_id")
    ven = _identifier(entry.get("ven"), f"{where}.ven")
    if ven not in vens:
        raise ValueError(f"{where}.ven: {ven!r} is not one of vens")
    resources = None
    if "resources" in entry:
        resources = tuple(_identifiers(entry["resources"], f"{where}.resources"))
        if not resources:
            raise ValueError(f"{where}.resources is empty: leave it out for the whole VEN")
        if len(resources) > MOST_RESOURCES:
            raise ValueError(f"{where}.resources: more than {MOST_RESOURCES}")
    meter_id = None
    if "meter_id" in entry:
        meter_id = _identifier(entry["meter_id"], f"{where}.meter_id")
    return MappedSite(site_id, ven, resources, meter_id)


def _no_shared_resources(site: MappedSite, earlier: list[MappedSite], where: str) -> None:
    """A VEN's reports and events must name one site each: a VEN given whole to a site serves
    no other, and a resource acts for one site. `earlier`: the VEN's sites mapped before."""
    for other in earlier:
        if site.resources is None or other.resources is None:
            raise ValueError(
                f"{where}: VEN {site.ven!r} also serves site {other.site_id!r}: give each of "
                "its sites its resources"
            )
        shared = sorted(set(site.resources) & set(other.resources))
        if shared:
            raise ValueError(
                f"{where}: resource {shared[0]!r} of VEN {site.ven!r} is site "
                f"{other.site_id!r}'s already"
            )


def _known_keys(table: dict[str, Any], known: frozenset[str], prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        name = one_line(unknown[0])[:60]
        raise ValueError(f"unknown key {prefix}{name} (known: {', '.join(sorted(known))})")


def _identifiers(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is not a list of names")
    names: dict[str, None] = {}  # in the file's order
    for number, item in enumerate(value, start=1):
        name = _identifier(item, f"{where}[{number}]")
        if name in names:
            raise ValueError(f"{where}: {name!r} is listed twice")
        names[name] = None
    return list(names)


def _identifier(value: Any, where: str) -> str:
    """An id as OpenADR's XML and etl's store carry it: text, printable, of a bounded length."""
    if value is None:
        raise ValueError(f"{where} is missing")
    if not isinstance(value, str):
        raise ValueError(f"{where} is not text")
    if not value.strip() or value != value.strip():
        raise ValueError(f"{where} {one_line(value)[:60]!r} is blank or has spaces around it")
    if len(value) > MOST_ID_CHARS:
        raise ValueError(f"{where} is longer than {MOST_ID_CHARS} characters")
    if not value.isprintable():
        raise ValueError(f"{where} {one_line(value)[:60]!r} has control characters")
    return value
