"""/etc/os-release of the hosts kubecrate meets, as the distributions ship them (the fields the
installer reads; docs/el8-el9.md "Host identity").
CentOS 7 has no PLATFORM_ID; CentOS Linux 8 says VERSION_ID="8", without the minor."""

CENTOS7 = ('NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\n'
           'VERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n'
           'CPE_NAME="cpe:/o:centos:centos:7"\n')
CENTOS8 = ('NAME="CentOS Linux"\nVERSION="8"\nID="centos"\nID_LIKE="rhel fedora"\n'
           'VERSION_ID="8"\nPLATFORM_ID="platform:el8"\nPRETTY_NAME="CentOS Linux 8"\n'
           'CPE_NAME="cpe:/o:centos:centos:8"\n')
ROCKY94 = ('NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\n'
           'ID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPLATFORM_ID="platform:el9"\n'
           'PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n')
ALMA9 = ('NAME="AlmaLinux"\nVERSION="9.4 (Seafoam Ocelot)"\nID="almalinux"\n'
         'ID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPLATFORM_ID="platform:el9"\n'
         'PRETTY_NAME="AlmaLinux 9.4 (Seafoam Ocelot)"\n')
RHEL9 = ('NAME="Red Hat Enterprise Linux"\nVERSION="9.4 (Plow)"\nID="rhel"\nID_LIKE="fedora"\n'
         'VERSION_ID="9.4"\nPLATFORM_ID="platform:el9"\n'
         'PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n')
