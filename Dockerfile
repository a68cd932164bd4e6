# Dataflow worker image with segprep installed, for --sdk_container_image (instead of --setup_file, which makes
# every worker build and install the package when it starts).
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/segprep:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/segprep:0.1.0
#   python -m pipelines.prepare ... --runner=DataflowRunner \
#       --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/segprep:0.1.0
#
# The base image's Beam must be the Beam that submits the job: BEAM_VERSION is the apache-beam pin in
# constraints.txt (a test keeps them equal), and the Python minor version must match the launching interpreter's.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

WORKDIR /opt/segprep
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY segprep ./segprep
COPY pipelines ./pipelines
COPY trainer ./trainer
# The workers run only the prepare pipeline: no TensorFlow (the [cpu]/[gpu] extras are for the trainer).
# opencv-python-headless needs no libGL. The base image's ENTRYPOINT (the Beam SDK harness) is kept.
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import array_record.python.array_record_module, cv2, imagecodecs, rasterio, tifffile, segprep.convert, pipelines.prepare"
