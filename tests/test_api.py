"""The notebook API (`from tenfold import train, evaluate, predict`) and the example notebook, executed."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import REPO, make_tree
from tenfold.errors import ConfigError


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n=24, splits=("train", "test"))


def test_train_evaluate_predict_from_python(tree, tmp_path):
    from matplotlib.figure import Figure
    from tenfold import evaluate, predict, train

    run = train(str(tree), epochs=3, batch_size=16, out=str(tmp_path / "run"), quiet=True)
    assert run.epoch == [1, 2, 3] and run.run_dir == tmp_path / "run"
    assert len(run.history["val_accuracy"]) == 3 and len(run.history["accuracy"]) == 3
    fig = run.plot()
    assert isinstance(fig, Figure) and [a.get_title() for a in fig.axes] == ["Loss", "Accuracy"]

    result = evaluate(run)
    assert result.images == 72 and result.accuracy >= 0.9 and "test split" in result.split
    assert np.array(result.confusion_matrix).sum() == 72
    assert len(result.plot_predictions(n=6).axes) == 12  # 6 images, each beside its bars

    cat = tree / "test" / "cat" / "0000.png"
    by_path = predict(run, [str(cat)])
    assert by_path.top(3)[0][0][0] == "cat" and by_path.probabilities.sum() == pytest.approx(1, abs=1e-5)
    by_array = predict(run.run_dir, result.judged.data.images[:5])
    assert by_array.probabilities.shape == (5, 3)
    assert len(by_array.plot().axes) == 10

    more = train(resume=run, epochs=4, quiet=True)
    assert more.epoch == [1, 2, 3, 4] and more.history["loss"][:3] == run.history["loss"]


def test_api_errors_are_tenfold_errors(tree, tmp_path):
    from tenfold import predict, train
    with pytest.raises(ConfigError, match="unknown setting.*batchsize"):
        train(str(tree), batchsize=16)
    run = train(str(tree), epochs=1, out=str(tmp_path / "run"), quiet=True)
    with pytest.raises(ConfigError, match="keeps its settings.*only --epochs, --device, --precision, --compile, "
                                          "--threads, --data may"):
        train(resume=run, epochs=2, lr=0.1)
    with pytest.raises(ConfigError, match="image 0: an image array must be"):
        predict(run, np.zeros((2, 16, 16, 5), np.uint8))


def test_importing_tenfold_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, tenfold; assert 'torch' not in sys.modules; from tenfold import train; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_example_notebook_runs_top_to_bottom(tree, tmp_path, monkeypatch):
    import nbclient
    import nbformat
    monkeypatch.setenv("TENFOLD_EXAMPLE_DATA", str(tree))
    monkeypatch.setenv("TENFOLD_EXAMPLE_EPOCHS", "2")
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # kept without outputs
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 5  # curves, confusion, per-class, softmax predictions, own images: inline
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # progress bar
    text = "".join(o.get("text", "") for o in outputs)
    assert "Epoch  2: Training Loss:" in text and "Accuracy on the test split" in text
    assert len(list(tmp_path.glob("runs/lenet5-*/report.html"))) == 1
