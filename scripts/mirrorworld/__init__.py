"""The mirror world: a local, offline stand-in for every upstream source kubecrate fetches from.

`scripts/mirror-world up|down|env|status` runs it (world.py). Its parts generate content into a
cache folder and the orchestrator serves it on 127.0.0.1:

- yum.py       CentOS 7.9 vault- and download.docker.com-shaped yum repos of real, signed RPMs
- releases.py  a dl.k8s.io-shaped release tree (kube binary stand-ins) and GitHub release tarballs
- registry.py  `docker-registry` instances holding the images under canonical and Aliyun paths
- world.py     generation with caching, nginx for the file trees, the world's mirror presets,
               the state file that tests and the demo read (`KUBECRATE_MW_STATE`)
"""
