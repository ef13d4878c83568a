"""The limits the operator enforces on what it reads, written once; docs/operating.md ("Limits") explains them.

Kubernetes accepts objects that Python cannot process naively: kube-apiserver stores JSON nested up to 10,000
levels (Go's ``encoding/json`` limit), while ``json.loads`` and ``copy.deepcopy`` recurse and fail somewhere between
a few hundred and a thousand levels. So every HelmRelease is decoded no deeper than ``DOCUMENT_DEPTH_MAX`` (a deeper
subtree is replaced by ``TOO_DEEP``), and values deeper than ``VALUES_DEPTH_MAX`` are refused with a condition.
"""

from __future__ import annotations

from typing import Final

#: Levels of maps and lists in ``spec.values`` (and in each values source). Real charts need fewer than 20.
VALUES_DEPTH_MAX: Final = 100
#: Levels of maps and lists in any API object the operator decodes; deeper subtrees become ``TOO_DEEP``.
#: ``spec.values`` starts at level 3 (object, spec, values), so a values tree cut here is still seen as too deep.
DOCUMENT_DEPTH_MAX: Final = 128
#: What a subtree nested deeper than ``DOCUMENT_DEPTH_MAX`` is decoded as.
TOO_DEEP: Final = "<nested too deep: left out by helmrelease-operator>"
#: kube-apiserver's limit on the total size of an object's annotations (``metadata.annotations``), in bytes.
ANNOTATIONS_SIZE_MAX: Final = 262_144
#: Helm stores each release revision in one Secret, and a Secret's data is limited to 1 MiB.
HELM_RELEASE_STORAGE_MAX: Final = 1_048_576
#: Bytes of a Helm repository's index.yaml, by default (``--max-index-size``, in MiB). helm reads the whole index
#: into memory twice per fetch and takes about 20 bytes of memory per byte of it (a 58 MiB index: 1.2 GB, 50 s);
#: the largest public repositories publish under 30 MiB.
INDEX_SIZE_MAX: Final = 32 * 1_048_576
#: Nodes that YAML aliases may add to a document when it is walked as a tree (beyond the nodes written out).
#: Anchors used as intended add a few; "billion laughs" adds hundreds of millions from under a kilobyte.
ALIAS_EXPANSION_MAX: Final = 1_000_000
