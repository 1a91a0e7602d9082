"""Protocols submitted through a SLURM-style queue (hosts.conf), as facilities run them.

``sbatch``/``squeue``/``scancel`` are small shims on PATH: sbatch runs the job script in the background and
prints "Submitted batch job N", squeue lists the job while its process lives, scancel kills it.  A GPU
protocol (simulate particles) and a CPU one (model to map) go through the queue of a scripted project; the
test checks the generated job scripts (queue, threads, GPU request, the protocol's command), that pyworkflow
substituted the job's GPU ids into the engine command (``CUDA_VISIBLE_DEVICES=0``), the runs' completion and
their registered outputs.  The hosts.conf here is the README's SLURM recipe.
"""
import os
import stat
import time

import cryoflex_scipion
from conftest import launch

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")

SHIMS = {
    "sbatch": """#!/bin/bash
state=${CRYOFLEX_SHIM_STATE:?}
id=$(cat "$state/next" 2>/dev/null || echo 1000); echo $((id + 1)) > "$state/next"
cp "$1" "$state/job_$id.sh"
setsid bash "$1" > "$state/job_$id.out" 2>&1 < /dev/null &
echo $! > "$state/job_$id.pid"
echo "Submitted batch job $id"
""",
    "squeue": """#!/bin/bash
state=${CRYOFLEX_SHIM_STATE:?}
while [ $# -gt 0 ]; do [ "$1" = "-j" ] && id=$2; shift; done
pid=$(cat "$state/job_$id.pid" 2>/dev/null) || exit 0
kill -0 "$pid" 2>/dev/null && echo "$id gpu cryoflex R"
exit 0
""",
    "scancel": """#!/bin/bash
state=${CRYOFLEX_SHIM_STATE:?}
kill "$(cat "$state/job_$1.pid")" 2>/dev/null
exit 0
""",
}

# The README's hosts.conf entry for SLURM (pyworkflow reads %_( as %( ).
HOSTS_CONF_SLURM = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = SLURM
MANDATORY = False
SUBMIT_COMMAND = sbatch %_(JOB_SCRIPT)s
SUBMIT_PREFIX = scipion
CHECK_COMMAND = squeue -h -j %_(JOB_ID)s
CANCEL_COMMAND = scancel %_(JOB_ID)s
QUEUES = {"gpu": [["JOB_MEMORY", "16000", "Memory (MB)", "Memory for the job"],
                  ["JOB_TIME", "120", "Time (minutes)", "Wall-clock limit"]]}
SUBMIT_TEMPLATE = #!/bin/bash
    #SBATCH --job-name=%_(JOB_NAME)s
    #SBATCH --partition=%_(JOB_QUEUE)s
    #SBATCH --ntasks=%_(JOB_NODES)d
    #SBATCH --cpus-per-task=%_(JOB_THREADS)d
    #SBATCH --gres=gpu:%_(GPU_COUNT)d
    #SBATCH --mem=%_(JOB_MEMORY)s
    #SBATCH --time=%_(JOB_TIME)s
    #SBATCH --output=%_(JOB_LOGS)s.out
    #SBATCH --error=%_(JOB_LOGS)s.err
    %_(JOB_COMMAND)s
"""


def test_readme_shows_this_recipe():
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
    with open(readme) as fh:
        text = fh.read()
    block = text.split("```ini\n", 1)[1].split("```", 1)[0]
    assert "\n".join(line[2:] for line in block.rstrip().splitlines()) + "\n" == HOSTS_CONF_SLURM


def _install_shims(folder):
    os.makedirs(folder, exist_ok=True)
    for name, text in SHIMS.items():
        path = os.path.join(folder, name)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def _wait_for(project, prot, timeout=300):
    """Poll as the GUI's refresh does: the run's own database, and the queue through CHECK_COMMAND."""
    start = time.time()
    while time.time() - start < timeout:
        project._updateProtocol(prot, checkPid=True)
        if prot.isFinished() or prot.isFailed() or prot.isAborted():
            return project.getProtocol(prot.getObjId())
        time.sleep(1.0)
    raise AssertionError("%s still %s after %d s" % (prot.getRunName(), prot.getStatus(), timeout))


def test_gpu_and_cpu_protocols_run_through_a_slurm_queue(project, tmp_path, monkeypatch):
    from pwem.protocols import ProtImportPdb
    from cryoflex_scipion.protocols import ProtCryoFlexModelToMap, ProtCryoFlexSimulateParticles
    shims, state = str(tmp_path / "bin"), str(tmp_path / "queue")
    _install_shims(shims)
    os.makedirs(state)
    monkeypatch.setenv("PATH", shims + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("CRYOFLEX_SHIM_STATE", state)
    with open(project.getLocalConfigHosts(), "w") as fh:
        fh.write(HOSTS_CONF_SLURM)
    project._loadHosts(None)  # the project's own hosts.conf, as a facility's scipion config would give
    assert project.getHostConfig("localhost").getQueueSystem().getName() == "SLURM"

    structure = launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=MODEL)).outputPdb
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, nParticles=8, boxSize=32, samplingRate=3.0, snr=1.0,
                              conformations=0)
    sim.inputStructure.set(structure)
    mapper = project.newProtocol(ProtCryoFlexModelToMap, boxSize=32, samplingRate=3.0)
    mapper.inputStructure.set(structure)
    runs = []
    for prot, gpus in ((sim, 1), (mapper, 0)):
        prot._useQueue.set(True)
        prot.setQueueParams(["gpu", {"JOB_MEMORY": "8000", "JOB_TIME": "30"}])
        if gpus:
            prot.useGpu.set(True)
            prot.gpuList.set("3")  # the head node's choice; inside the job the allocation is GPU 0
        project.launchProtocol(prot)
        assert prot.getJobIds(), "no job id from sbatch for %s" % prot.getRunName()
        runs.append((_wait_for(project, prot), gpus))

    scripts = sorted(f for f in os.listdir(state) if f.endswith(".sh"))
    assert len(scripts) == 2, scripts
    for (run, gpus), script in zip(runs, scripts):
        with open(os.path.join(state, script)) as fh:
            text = fh.read()
        assert "#SBATCH --partition=gpu" in text and "#SBATCH --mem=8000" in text and "#SBATCH --time=30" in text
        assert "#SBATCH --gres=gpu:%d" % gpus in text, text
        assert "pw_protocol_run.py" in text and run.getDbPath() in text
        assert run.isFinished(), "%s %s: %s" % (run.getRunName(), run.getStatus(), run.getErrorMessage())
        with open(run.getStdoutLog()) as fh:
            log = fh.read()
        engine_lines = [line for line in log.splitlines() if "cryoflex_scipion.engine" in line]
        assert engine_lines, log[-2000:]
        if gpus:  # %(GPU)s became the job's GPU, not the head node's id 3
            assert any("CUDA_VISIBLE_DEVICES=0 " in line for line in engine_lines), engine_lines
            assert not any("%(GPU)s" in line or "CUDA_VISIBLE_DEVICES=3" in line for line in engine_lines)
    sim_run, map_run = runs[0][0], runs[1][0]
    assert sim_run.outputParticles.getSize() == 8
    assert map_run.outputVolume.getDim() == (32, 32, 32)
