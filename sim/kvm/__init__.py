"""The Linux KVM module (book3s, HV and PR) and the eventfds it signals."""
