"""Board profiles (Jetson, Raspberry Pi, x86 hosts) and detection (installed as edgeinf.boards)."""
