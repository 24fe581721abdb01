"""The Milvus server the tests run vs the one k8s deploys (issue 21 item 6).

They cannot be one version: no Milvus 2.4 server can run on these machines (PyPI's embedded
``milvus`` stops at 2.3.x, no image registry is reachable, Debian has none), and the
deployment cannot go down to 2.3.x: Milvus 2.3 has no ``common.security.defaultRootPassword``
(checked: the string is absent from the 2.3.5 binary), which the manifest sets from a Secret,
so a 2.3 cluster would keep root's well-known password. docs/indexing.md "Milvus versions"
says this and what a cluster must prove; this test keeps that page, the manifest and the pin
in step, so that neither version moves without the page saying so.
"""

import re
from pathlib import Path

from milvus_netns import EXTERNAL_URI_ENV, MILVUS_MANIFEST, ROOT, deployed_version, pinned_server_version

DOC = ROOT / "docs" / "indexing.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_deployed_and_the_tested_milvus_are_the_documented_pair():
    deployed, tested = deployed_version(), pinned_server_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", deployed) and re.fullmatch(r"\d+\.\d+\.\d+", tested)
    doc = _section(DOC.read_text(), "Milvus versions")
    assert f"`milvusdb/milvus:v{deployed}`" in doc, f"docs/indexing.md must name the deployed image v{deployed}"
    assert f"`milvus=={tested}`" in doc, f"docs/indexing.md must name the tested server {tested}"
    if deployed != tested:
        # The documented reason for not pinning the deployment down stays true of the manifest ...
        assert "COMMON_SECURITY_DEFAULTROOTPASSWORD" in MILVUS_MANIFEST.read_text()
        assert "defaultRootPassword" in doc
        # ... and the page gives the command that proves the deployed version on a cluster.
        assert f"{EXTERNAL_URI_ENV}=" in doc and "test_backfill_search_swap_rollback_on_the_deployed_version" in doc
    # Every page that names the tested server names the pinned one.
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for named in re.findall(r"(?<![A-Za-z])[Mm]ilvus (\d+\.\d+\.\d+)", page.read_text()):
            assert named in (tested, deployed), f"{page.relative_to(ROOT)} names Milvus {named}"
    assert Path(MILVUS_MANIFEST).is_file()
