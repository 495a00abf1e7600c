from magictokens.report import BEGIN, END, render
from magictokens.config import REPO_ROOT


def test_readme_numbers_are_the_committed_results():
    """README's results block is exactly what `magictokens report` renders from results/*.json."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == render().strip(), "run `magictokens report` and commit README.md"
