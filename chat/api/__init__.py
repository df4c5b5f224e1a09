"""The REST door (PROTOCOL section 8): another way onto the same services and selectors as the
socket. Views parse input with serializers, call one function, and shape the output."""
