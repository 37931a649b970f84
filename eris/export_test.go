package eris

// XORBlockForTest exposes xorBlock to the external tests.
var XORBlockForTest = xorBlock
