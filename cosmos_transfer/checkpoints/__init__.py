"""Weight files: reading them safely (files.py) and the official layouts of NVIDIA's Cosmos families, one file per
family (transfer1.py: Cosmos-1.0 / Cosmos-Transfer1), each converting to and from our names. diffusers.py maps our
GeneralDIT names to Hugging Face diffusers' CosmosTransformer3DModel (the numerical oracle of the tests)."""
